"""Command-line plumbing every method command shares (the public toolkit for plugins).

A plugin's ``register_commands(cli)`` builds its commands with these decorators instead of
declaring its own ``--backbone`` / ``--out`` / ``--json`` options, so every command behaves
the same way::

    from interpcore.commands import backbone_options, batch_size_option, output_options

    @cli.command("mymethod")
    @click.argument("images", nargs=-1, required=True)
    @backbone_options(role="vision-language")
    @batch_size_option()
    @output_options()
    def mymethod(images, backbone, pretrained, device, batch_size, run):
        import interpcore
        bb = interpcore.get_backbone(backbone, pretrained=pretrained, device=device)
        result = ...                         # heavy work
        run.finish(result, text=str(result), sections=[...])

``output_options`` replaces ``--out`` / ``--report`` / ``--json`` / ``-q`` by one
:class:`Run` argument. Everything that can be checked before the work is checked when the
command starts: the output folder is created and must be writable, the report's folder too.
``--report`` without ``--out`` builds the report from a temporary run folder that is removed
afterwards. ``-q`` works after the subcommand as well as before it (``interp -q ...``).

Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import click

from .base import BACKBONE_ROLES
from .errors import InterpError
from .progress import set_quiet

__all__ = ["Run", "backbone_options", "batch_size_option", "check_writable", "echo_json", "output_options",
           "quiet_option"]


def _default_backbone(role: str):
    def default():
        from .registry import get_registry

        return get_registry().default_backbone(role)

    return default


def backbone_options(role: str = "vision-language", *, names=("-b", "--backbone"),
                     param: str = "backbone", pretrained: bool = True, device: bool = True,
                     help: str | None = None):
    """``-b/--backbone NAME`` (default: the backbone a plugin advertises for ``role``),
    ``--pretrained`` and ``--device``. ``names`` / ``param`` rename the backbone option
    (e.g. ``("-c", "--captioner")``, ``"captioner"`` for a second backbone)."""
    if role not in BACKBONE_ROLES:
        raise InterpError(f"unknown backbone role '{role}'; roles: {', '.join(BACKBONE_ROLES)}")
    what = BACKBONE_ROLES[role]
    opts = [click.option(*names, param, default=_default_backbone(role), show_default=f"the "
                         f"installed default {role} backbone",
                         help=help or f"Backbone 'library:model' ({what}); see "
                                      "'interp backbones list'.")]
    if pretrained:
        opts.append(click.option("--pretrained", default=None,
                                 help="Weights: a tag, a local file or folder, or a hub name."))
    if device:
        opts.append(click.option("--device", default="auto", show_default=True,
                                 help="auto, cpu, cuda, cuda:1, mps."))

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def batch_size_option(default: int = 64):
    """``--batch-size N`` (checked to be at least 1)."""

    def check(_ctx, _param, value):
        if value is not None and value < 1:
            raise InterpError(f"--batch-size must be at least 1, got {value}")
        return value

    return click.option("--batch-size", type=int, default=default, show_default=True,
                        callback=check, help="Images per forward pass.")


def echo_json(data) -> None:
    """Print ``data`` (results, dataclasses, arrays, tensors) as indented JSON."""
    from .base import to_jsonable

    click.echo(json.dumps(to_jsonable(data), indent=2))


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` (and parents) and make sure a file can be written in it, or raise
    an :class:`InterpError` naming ``what`` (e.g. ``--out``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InterpError(f"{what} {folder} exists and is not a folder")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise InterpError(f"{what} {folder}: {parent} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".interp-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InterpError(f"{what} {folder} is not writable ({exc.strerror or exc})") from None


class Run:
    """Where a command's outputs go, and how its result is printed.

    ``out``: the run folder (``--out``, or a temporary folder when only ``--report`` was
    given), or ``None``. ``as_json``: print JSON instead of text. Call :meth:`finish` once,
    at the end, with the result.
    """

    def __init__(self, out=None, report=None, as_json: bool = False):
        self.as_json = bool(as_json)
        self.report = Path(report) if report else None
        self._tmp = None
        self.user_out = Path(out) if out else None
        if self.report is not None:
            if self.report.is_dir():
                raise InterpError(f"--report {self.report} is a folder; give a file, PATH.html")
            if self.report.suffix.lower() not in (".html", ".htm"):
                raise InterpError(f"--report {self.report}: give a path ending in .html")
            check_writable(self.report.parent if str(self.report.parent) else Path("."),
                           "--report's folder")
        if self.user_out is not None:
            check_writable(self.user_out, "--out")
            self.out = self.user_out
        elif self.report is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="interp-run-")
            self.out = Path(self._tmp.name)
        else:
            self.out = None

    def file(self, name: str) -> Path | None:
        """The path of ``name`` inside the run folder, or ``None`` when there is none."""
        return None if self.out is None else self.out / name

    def echo(self, text: str = "", err: bool = False) -> None:
        """Print a line of the text output (nothing in JSON mode)."""
        if not self.as_json:
            click.echo(text, err=err)

    def finish(self, result=None, *, text: str | None = None, data=None, method: str = "",
               title: str = "", sections=(), settings: Mapping | None = None, inputs=None,
               figures=(), results=None) -> Path | None:
        """Print the result and, with a run folder, write ``run.json`` (+ the report).

        ``text``: what to print (default ``str(result)``); ``data``: what ``--json`` prints and
        ``run.json`` stores as results (default ``result.to_dict()``). ``sections``: report
        sections (see :mod:`interpcore.report`). ``results``: what ``run.json`` stores when it
        should differ from ``data`` (e.g. a shorter or a longer form). Returns the report path.
        """
        from .base import to_jsonable

        if data is None:
            data = result.to_dict() if hasattr(result, "to_dict") else result
        data = to_jsonable(data)
        rep = None
        try:
            if self.out is not None:
                from .report import current_command, finish_run

                manifest = {"method": method, "title": title or method,
                            "command": current_command(), "settings": dict(settings or {}),
                            "inputs": inputs if inputs is not None else [],
                            "sections": list(sections),
                            "results": data if results is None else to_jsonable(results)}
                if figures:
                    manifest["figures"] = list(figures)
                rep = finish_run(self.out, manifest, self.report)
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            if text is None and result is not None:
                text = str(result)
            if text:
                click.echo(text)
            if self.user_out is not None:
                click.echo(f"wrote {self.user_out / 'run.json'}", err=True)
            if rep:
                click.echo(f"wrote report {rep}", err=True)
        return rep


def output_options(*, out: bool = True, report: bool = True, out_required: bool = False,
                   out_names=("--out",), quiet_names=("-q", "--quiet")):
    """``--out DIR``, ``--report PATH.html``, ``--json`` and ``-q/--quiet``, handed to the
    command as one ``run`` argument (a :class:`Run`), checked before the command runs.
    ``out_names`` / ``quiet_names``: the spellings of ``--out`` and ``--quiet`` (e.g.
    ``("--out", "-o")`` to keep an alias, ``("--quiet",)`` where ``-q`` means something else)."""

    def deco(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            quiet = kwargs.pop("quiet", False)
            if quiet:
                set_quiet(True)
            run = Run(kwargs.pop("out", None), kwargs.pop("report", None),
                      kwargs.pop("as_json", False))
            return f(*args, run=run, **kwargs)

        opts = []
        if out:
            opts.append(click.option(*out_names, "out", type=str,
                                     default=None, required=out_required,
                                     help="Write results, figures and run.json into this folder."))
        if report:
            opts.append(click.option("--report", type=str, default=None,
                                     help="Also write a self-contained HTML report (PATH.html)."))
        opts.append(click.option("--json", "as_json", is_flag=True,
                                 help="Print the result as JSON."))
        opts.append(click.option(*quiet_names, "quiet", is_flag=True, help="No progress bars."))
        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper

    return deco


def quiet_option(f):
    """Only ``-q/--quiet`` (for commands without outputs)."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        if kwargs.pop("quiet", False):
            set_quiet(True)
        return f(*args, **kwargs)

    return click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(wrapper)

