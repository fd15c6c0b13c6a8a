"""The ``interp`` command line.

Only click and the core are imported at start-up; plugins add their commands through the
``register_commands`` hook and import torch inside the command bodies. Errors print as one
line (``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import subprocess
import sys

import click

from . import __version__, cli_report, cli_vocabularies
from .engine.cli import job as _job_group
from .commands import echo_json as _echo_json
from .errors import InterpError
from .progress import set_quiet


class _Group(click.Group):
    """A group whose errors print as one line unless --debug was given."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `interp backbones list | head`: the reader left, not an error
            _quiet_broken_pipe()
        except Exception as exc:  # noqa: BLE001 - turned into one clean line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            kind = "error" if isinstance(exc, InterpError) else type(exc).__name__
            text = str(exc)
            if isinstance(exc, OSError) and exc.filename and exc.strerror:
                # a path the user gave that cannot be used: one line that names it
                kind, text = "error", _os_error_line(exc)
            click.echo(f"interp: {kind}: {text}", err=True)
            click.echo("interp: (run with --debug for the traceback)", err=True)
            ctx.exit(1)


def _os_error_line(exc: OSError) -> str:
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if getattr(exc, "filename2", None) else "")
    hint = {
        "NotADirectoryError": "a part of the path is a file, not a folder",
        "IsADirectoryError": "it is a folder; name a file",
        "PermissionError": "choose a place you can write, or fix the permissions",
        "FileNotFoundError": "check the path",
        "FileExistsError": "it exists already; choose another name",
    }.get(type(exc).__name__, "check the path")
    return f"{where}: {exc.strerror.lower()} ({hint})"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="interpcore")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def cli(ctx, debug, quiet):
    """interpcore: interpret vision and vision-language models through plugins.

    \b
    Methods:   interp splice ... | interp prs ... | interp textspan ... | interp falcon ...
    Discover:  interp plugins | interp backbones list | interp methods list
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    set_quiet(quiet)


def _registry():
    from .registry import get_registry

    return get_registry()


# -- plugins ----------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """Show every plugin: status, distribution, version, hooks and errors."""
    statuses = list(_registry().manager.statuses.values())
    if as_json:
        # a list of plugins, as before; clashes are in each plugin's warnings
        _echo_json([s.to_dict() for s in statuses])
        return
    if not statuses:
        click.echo("no plugins loaded (INTERP_NO_PLUGINS is set?)")
    for s in statuses:
        click.echo(f"{s.name:<16} {s.status:<9} {s.distribution} {s.version}  ({s.module})")
        if s.hooks:
            click.echo(f"{'':<16} hooks: {', '.join(s.hooks)}")
        if s.error:
            click.echo(f"{'':<16} error: {s.error}")
        for w in s.warnings:
            click.echo(f"{'':<16} warning: {w}")
    clashes = _registry().clashes()
    if clashes:
        click.echo("\nname clashes (the plugin loaded first keeps the name):")
        for c in clashes:
            click.echo(f"  {c['kind']} '{c['name']}': kept by {c['kept_by']}, ignored from "
                       f"{', '.join(c['ignored'])}")


def _confirm(question: str) -> bool:
    """Ask on the terminal; no answer at all (no terminal, closed stdin) is an error that says
    to add -y, not a traceback or a bare 'Aborted!'."""
    try:
        return click.confirm(question, default=False)
    except click.Abort:
        raise InterpError("this needs a confirmation and none could be read (no terminal?); "
                          "add -y to confirm") from None


@cli.command()
@click.argument("packages", nargs=-1)
@click.option("-U", "--upgrade", is_flag=True)
@click.option("-e", "--editable", type=click.Path(exists=True, file_okay=False),
              help="Install a local folder in editable mode.")
def install(packages, upgrade, editable):
    """pip-install plugin packages (or, with -e, a local folder) into the environment interp runs in."""
    if not packages and not editable:
        raise InterpError("name a package to install, or a folder with -e (e.g. 'interp install -e "
                          "examples/interp_example_plugin')")
    args = [sys.executable, "-m", "pip", "install"]
    if upgrade:
        args.append("--upgrade")
    if editable:
        args += ["-e", editable]
    sys.exit(subprocess.call(args + list(packages)))


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall(packages, yes):
    """pip-uninstall plugin packages from the environment interp runs in."""
    if not yes and not _confirm(f"uninstall {', '.join(packages)}?"):
        click.echo("nothing uninstalled")
        return
    args = [sys.executable, "-m", "pip", "uninstall", "-y"] + list(packages)
    sys.exit(subprocess.call(args))


# -- list commands ------------------------------------------------------------------------------


@cli.group()
def backbones():
    """Backbones (models) by name: 'library:model'."""


@backbones.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def backbones_list(pattern, as_json):
    """List backbones matching PATTERN (wildcards), with pretrained tags."""
    infos = _registry().list_backbones(pattern)
    if as_json:
        _echo_json(infos)
        return
    for info in infos:
        tags = f"  [{', '.join(info.pretrained)}]" if info.pretrained else ""
        click.echo(f"{info.name}{tags}")
    if not infos:
        click.echo(f"no backbone matches '{pattern}'", err=True)


def _simple_list(kind: str, pattern: str, as_json: bool) -> None:
    reg = _registry()
    reg.ensure_loaded()
    import fnmatch

    rows = [
        (e.name, e.plugin, e.description)
        for n, e in sorted(reg.entries[kind].items())
        if fnmatch.fnmatch(n, pattern)
    ]
    if as_json:
        _echo_json([{"name": n, "plugin": p, "description": d} for n, p, d in rows])
        return
    width = max((len(n) for n, _, _ in rows), default=0) + 2
    for n, p, d in rows:
        click.echo(f"{n:<{width}}{d}  ({p})")


@cli.group()
def vocabularies():
    """Vocabularies: concept lists, text pools, caption pools."""


@vocabularies.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def vocabularies_list(pattern, as_json):
    """List vocabularies matching PATTERN."""
    _simple_list("vocabulary", pattern, as_json)


@cli.group()
def methods():
    """Decomposers and explainers."""


@methods.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def methods_list(pattern, as_json):
    """List decomposers and explainers matching PATTERN."""
    import fnmatch

    reg = _registry()
    rows = [
        {"name": e.name, "kind": kind, "requires": list(e.requires), "plugin": e.plugin,
         "description": e.description}
        for kind in ("decomposer", "explainer")
        for n, e in sorted(reg.entries[kind].items())
        if fnmatch.fnmatch(n, pattern)
    ]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        req = f" requires: {', '.join(r['requires'])}" if r["requires"] else ""
        click.echo(f"{r['name']:<16} {r['kind']:<11} {r['description']}{req}  ({r['plugin']})")


@cli.group()
def datasets():
    """Datasets by name."""


@datasets.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def datasets_list(pattern, as_json):
    """List datasets matching PATTERN."""
    _simple_list("dataset", pattern, as_json)


# -- cache ------------------------------------------------------------------------------------


@cli.group()
def cache():
    """The user cache (concept dictionaries, image means, downloaded files)."""


def _cache_rows(kind: str | None = None, pattern: str = "*") -> list[dict]:
    """:func:`interpcore.cache.list_entries` (interrupted writes included) as rows, each with
    what it holds (``about``)."""
    import dataclasses

    from . import cache as c

    rows = []
    for e in c.list_entries(kind, pattern, incomplete=True):
        row = dataclasses.asdict(e)
        row["path"] = str(e.path)
        row["about"] = _describe_entry(e.path) if e.path.is_dir() or e.complete else "incomplete write"
        rows.append(row)
    return rows


def _describe_entry(path) -> str:
    """What an entry holds: a safetensors file's metadata, a job's status, else nothing."""
    if path.is_dir():
        manifest = path / "manifest.json"
        try:
            status = json.loads(manifest.read_text()).get("status") if manifest.is_file() else None
        except (OSError, ValueError):
            return "(unreadable manifest)"
        return f"job {status}" if status else ""
    if path.suffix != ".safetensors":
        return ""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError):
        return "(unreadable: will be rebuilt)"
    parts = [meta.get(k) for k in ("kind", "backbone", "vocabulary", "dataset", "count")]
    return " ".join(str(v) for v in parts if v not in (None, "", "None"))


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _age(seconds: int) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span}{unit}"
    return f"{seconds}s"


@cache.command("list")
@click.option("--kind", default=None, help="Only this kind (top folder): concepts, image_means, downloads, jobs, ...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the same rows).")
def cache_list(kind, as_json):
    """List cache entries, one line each: kind, key, size, age and what it holds."""
    from . import cache as c

    rows = _cache_rows(kind)
    if as_json:
        _echo_json({"folder": str(c.cache_dir()), "entries": rows})
        return
    click.echo(f"cache folder: {c.cache_dir()}")
    if not rows:
        click.echo("(empty)")
        return
    wk = max(4, *(len(r["kind"]) for r in rows))
    wkey = max(3, *(len(r["key"]) for r in rows))
    click.echo(f"{'KIND':<{wk}}  {'KEY':<{wkey}}  {'SIZE':>9}  {'AGE':>4}  ABOUT")
    for r in rows:
        about = r["about"] if r["complete"] or r["about"] != "incomplete write" else \
            "incomplete write (removed by 'interp cache clear')"
        if r["files"] > 1:
            about = f"{r['files']} files" + (f", {about}" if about else "")
        click.echo(f"{r['kind']:<{wk}}  {r['key']:<{wkey}}  {_size(r['bytes']):>9}  "
                   f"{_age(r['age_s']):>4}  {about}".rstrip())
    total = sum(r["bytes"] for r in rows)
    click.echo(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {_size(total)}")


@cache.command("clear")
@click.argument("pattern", default="*")
@click.option("--kind", default=None, help="Only this kind (top folder), e.g. concepts.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(pattern, kind, yes):
    """Delete cache entries matching PATTERN (a wildcard on the key, KIND/KEY or the name;
    default: all), including temporaries left by interrupted writes."""
    from . import cache as c

    rows = c.list_entries(kind, pattern, incomplete=True)
    if not rows:
        click.echo("nothing to remove")
        return
    what = f"{len(rows)} cache entr{'y' if len(rows) == 1 else 'ies'}" + (f" of kind '{kind}'" if kind else "")
    if not yes and not _confirm(f"delete {what} matching '{pattern}' in {c.cache_dir()}?"):
        click.echo("nothing removed")
        return
    removed = len(c.clear(pattern, kind))
    click.echo(f"removed {removed} entr{'y' if removed == 1 else 'ies'}")


# -- plugin commands ------------------------------------------------------------------------


_commands_added = False


def _add_plugin_commands() -> None:
    global _commands_added
    if _commands_added:
        return
    _commands_added = True
    reg = _registry()
    # A command name belongs to whoever added it first (the core, then plugins in load
    # order, like every other name): a later plugin cannot replace it.
    owners = {name: "interpcore" for name in cli.commands}
    before: dict = {}

    def bind(plugin_name):
        before["commands"] = dict(cli.commands)
        return {"cli": cli}

    def check_after(plugin_name):
        if reg.manager.statuses[plugin_name].status == "failed":
            # a plugin that fails keeps none of its commands
            cli.commands.clear()
            cli.commands.update(before["commands"])
            return
        old = before["commands"]
        for name, command in list(cli.commands.items()):
            if name in old and command is not old[name]:
                cli.commands[name] = old[name]
                msg = (f"command '{name}' belongs to '{owners[name]}'; '{plugin_name}' may not "
                       "replace it (its version was ignored)")
                reg.manager.statuses[plugin_name].warnings.append(msg)
                click.echo(f"interp: {msg}", err=True)
            elif name not in old:
                owners[name] = plugin_name

    reg.manager.call_each("register_commands", bind, after=check_after)


# Core commands kept in their own modules (they do not import this one: no cycle).
cli.add_command(_job_group)
cli.add_command(cli_report.report)
vocabularies.add_command(cli_vocabularies.vocabularies_show)
vocabularies.add_command(cli_vocabularies.vocabularies_fetch)


def _one_line_warnings() -> None:
    """Print interpcore's own warnings as ``interp: warning: ...`` (one line, no source line)."""
    import warnings

    from .errors import InterpWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InterpWarning):
            click.echo(f"interp: warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv=None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    _one_line_warnings()
    try:
        _add_plugin_commands()
    except InterpError as exc:  # strict mode: a plugin failed to load
        if debug:
            raise
        click.echo(f"interp: error: {exc}", err=True)
        sys.exit(1)
    try:
        cli.main(args=argv, prog_name="interp")
    except BrokenPipeError:  # `interp backbones list | head`: the reader left, not an error
        _quiet_broken_pipe()


def _quiet_broken_pipe() -> None:
    """Exit 0 without a word once the reader of stdout has gone: stdout is pointed at
    /dev/null so that the interpreter's final flush cannot raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
