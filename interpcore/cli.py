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

from . import __version__
from .errors import InterpError
from .progress import set_quiet


class _Group(click.Group):
    """A group whose errors print as one line unless --debug was given."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - turned into one clean line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            kind = "error" if isinstance(exc, InterpError) else type(exc).__name__
            click.echo(f"interp: {kind}: {exc}", err=True)
            click.echo("interp: (run with --debug for the traceback)", err=True)
            ctx.exit(1)


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


def _echo_json(data) -> None:
    from .base import to_jsonable

    click.echo(json.dumps(to_jsonable(data), indent=2))


# -- plugins ----------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """Show every plugin: status, distribution, version, hooks and errors."""
    statuses = list(_registry().manager.statuses.values())
    if as_json:
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


@cli.command()
@click.argument("packages", nargs=-1, required=True)
@click.option("-U", "--upgrade", is_flag=True)
@click.option("-e", "--editable", type=click.Path(exists=True), help="Install a local folder in editable mode.")
def install(packages, upgrade, editable):
    """pip-install plugin packages into the environment interp runs in."""
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
    args = [sys.executable, "-m", "pip", "uninstall"] + (["-y"] if yes else []) + list(packages)
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
    rows = [
        (e.name, e.plugin, e.description)
        for n, e in sorted(reg.entries[kind].items())
        if __import__("fnmatch").fnmatch(n, pattern)
    ]
    if as_json:
        _echo_json([{"name": n, "plugin": p, "description": d} for n, p, d in rows])
        return
    for n, p, d in rows:
        click.echo(f"{n:<24} {d}  ({p})")


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


@cache.command("list")
def cache_list():
    """List cached files with their sizes."""
    from . import cache as c

    entries = c.list_entries()
    click.echo(f"cache folder: {c.cache_dir()}")
    for path, size in entries:
        click.echo(f"{size / 1e6:9.2f} MB  {path.relative_to(c.cache_dir())}")
    if not entries:
        click.echo("(empty)")


@cache.command("clear")
@click.argument("pattern", default="*")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(pattern, yes):
    """Delete cached files matching PATTERN (default: all)."""
    from . import cache as c

    if not yes:
        click.confirm(f"delete cached files matching '{pattern}' in {c.cache_dir()}?", abort=True)
    removed = c.clear(pattern)
    click.echo(f"removed {len(removed)} file(s)")


# -- plugin commands ------------------------------------------------------------------------


_commands_added = False


def _add_plugin_commands() -> None:
    global _commands_added
    if _commands_added:
        return
    _commands_added = True
    reg = _registry()
    reg.manager.call_each("register_commands", lambda _name: {"cli": cli})


# Core commands kept in their own modules; they attach themselves to the groups above.
from . import cli_report, cli_vocabularies  # noqa: E402,F401


def main(argv=None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        _add_plugin_commands()
    except InterpError as exc:  # strict mode: a plugin failed to load
        if debug:
            raise
        click.echo(f"interp: error: {exc}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="interp")


if __name__ == "__main__":
    main()
