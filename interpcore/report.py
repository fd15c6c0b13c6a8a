"""Run directories and self-contained HTML reports.

A method command given ``--out DIR`` writes its files there plus ``DIR/run.json``, the
*manifest*::

    {"method": "splice", "title": "...", "command": "interp splice ...",
     "created": "2026-01-01T12:00:00+00:00", "settings": {...}, "inputs": [...],
     "sections": [{"title": "...", "text": "how to read this",
                   "figures": ["rel/path.png"],
                   "tables": [{"title": "...", "columns": [...], "rows": [[...], ...]}]}],
     "results": {... any JSON ...}}

:func:`write_run` writes the manifest atomically; :func:`render_report` turns a run directory
into ONE HTML file that needs nothing but a browser: every figure is embedded as a base64
``data:`` URI, the CSS is inline, there is no script, no external font and no network request.
The page is the jinja2 template ``interpcore/templates/report.html.j2`` with autoescape on,
so everything taken from the manifest is HTML-escaped; the manifest's schema is the pydantic
models of :mod:`interpcore.manifest`.

At import this module needs only the standard library; jinja2 and pydantic are imported when
a report is rendered or a manifest checked, so method commands do not slow the CLI down.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .cache import atomic_path
from .errors import InterpError
from .figures import make_readable

RUN_FILE = "run.json"
REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"

#: Image types a figure may have, by file suffix.
MIME_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

_TOP_KEYS = ("method", "title", "command", "created", "settings", "inputs", "sections", "results")


class ReportError(InterpError):
    """A run directory or manifest that cannot be turned into a report."""


# --------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def current_command() -> str:
    """The command line this process was started with, as ``interp ...`` where it applies."""
    import shlex

    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("__main__.py", "-c", ""):
        prog = "python"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


def validate_manifest(manifest: Mapping, run_dir: str | os.PathLike | None = None) -> dict:
    """Check a manifest's shape and return a normalized copy (missing optional keys filled).

    The schema is the pydantic models of :mod:`interpcore.manifest`. Raises
    :class:`ReportError` naming the first problem in one line. With ``run_dir``, also checks
    that every figure file exists there.
    """
    if not isinstance(manifest, Mapping):
        raise ReportError(f"a run manifest must be a JSON object, got {type(manifest).__name__}")
    from .manifest import validate

    m = validate(manifest)
    if run_dir is not None:
        for sec in m["sections"]:
            for fig in sec["figures"]:
                _figure_path(Path(run_dir), fig, sec["title"])
    return m


def write_run(run_dir: str | os.PathLike, manifest: Mapping) -> Path:
    """Write ``run_dir/run.json`` atomically and return its path.

    ``created`` and ``command`` are filled in when missing; tensors, arrays and paths in the
    manifest are converted to JSON values. Figures named in the manifest must already exist
    in ``run_dir`` (relative paths), so that the run directory is complete when written.
    """
    from .base import to_jsonable

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    m = dict(manifest)
    if not m.get("created"):
        m["created"] = now_iso()
    if not m.get("command"):
        m["command"] = current_command()
    m = to_jsonable(validate_manifest(m, run_dir))
    ordered = {k: m[k] for k in _TOP_KEYS if k in m}
    ordered.update({k: v for k, v in m.items() if k not in ordered})
    text = json.dumps(ordered, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    path = run_dir / RUN_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    make_readable(path)
    return path


def load_run(run_dir: str | os.PathLike) -> dict:
    """Read and validate ``run_dir/run.json``."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name.endswith(".json"):
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise ReportError(f"run directory not found: {run_dir}")
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise ReportError(
            f"{run_dir} has no {RUN_FILE}; give a folder written by a method command "
            "with --out DIR"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON ({exc})") from None
    return validate_manifest(manifest)


def finish_run(run_dir, manifest: Mapping, report: str | os.PathLike | None = None) -> Path | None:
    """Write the manifest and, when ``report`` is a path, the HTML report; return the report path.

    The one call a method command needs at the end of ``--out DIR [--report PATH.html]``.
    """
    write_run(run_dir, manifest)
    if report:
        return render_report(run_dir, report)
    return None


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _figure_path(run_dir: Path, fig: str, section: str) -> Path:
    path = Path(fig)
    if not path.is_absolute():
        path = run_dir / path
    if path.suffix.lower() not in MIME_TYPES:
        raise ReportError(
            f"figure '{fig}' in section '{section}' has an unsupported type; use one of "
            + ", ".join(sorted(MIME_TYPES))
        )
    if not path.is_file():
        raise ReportError(
            f"figure '{fig}' named in section '{section}' is missing from {run_dir}"
        )
    return path


def _data_uri(path: Path) -> str:
    data = path.read_bytes()
    if not data:
        raise ReportError(f"figure file {path} is empty")
    mime = MIME_TYPES[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _cell(value) -> dict:
    """A table cell: its text and whether it is a number (right-aligned)."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    elif value is None:
        text = ""
    else:
        text = str(value)
    return {"text": text, "num": isinstance(value, (int, float)) and not isinstance(value, bool)}


def _blocks(text: str) -> list[tuple[str, object]]:
    """Plain text to ("p", text) / ("ul", [items]) blocks: blank lines separate paragraphs,
    a block whose every line starts with '- ' or '* ' is a bullet list."""
    out: list[tuple[str, object]] = []
    for block in str(text).strip().split("\n\n"):
        lines = [ln.rstrip() for ln in block.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        if all(ln.lstrip().startswith(("- ", "* ")) for ln in lines):
            out.append(("ul", [ln.lstrip()[2:] for ln in lines]))
        else:
            out.append(("p", " ".join(ln.strip() for ln in lines)))
    return out


def _value(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


@functools.lru_cache(maxsize=None)
def template(name: str = "report.html.j2"):
    """A template from ``interpcore/templates`` (autoescape on, undefined names are errors)."""
    return _environment().get_template(name)


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("interpcore", "templates"),
        autoescape=True,  # every manifest value is escaped; nothing is marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(manifest: Mapping, run_dir: str | os.PathLike) -> str:
    """The report for ``manifest`` (figures read from ``run_dir``) as an HTML string.

    The page is ``templates/report.html.j2``; this function only prepares plain values for it
    (figures as base64 ``data:`` URIs, cells as text, text as paragraphs and bullets).
    """
    from . import __version__
    from .base import to_jsonable

    run_dir = Path(run_dir)
    m = validate_manifest(manifest)
    sections = []
    for sec in m["sections"]:
        figs = []
        for fig in sec["figures"]:
            path = _figure_path(run_dir, fig, sec["title"])
            figs.append({"src": _data_uri(path), "alt": f"{sec['title']}: {Path(fig).name}",
                         "caption": fig})
        tables = [{"title": tab["title"], "columns": [str(c) for c in tab["columns"]],
                   "rows": [[_cell(v) for v in row] for row in tab["rows"]]}
                  for tab in sec["tables"]]
        sections.append({"title": sec["title"], "blocks": _blocks(sec["text"]) if sec["text"] else [],
                         "figures": figs, "tables": tables})
    return template(TEMPLATE).render(
        title=m["title"] or m["method"],
        method=m["method"],
        created=m["created"],
        command=m["command"],
        inputs=[_value(x) for x in m["inputs"]],
        settings=[(str(k), _value(to_jsonable(v))) for k, v in m["settings"].items()],
        sections=sections,
        results=json.dumps(to_jsonable(m["results"]), indent=2, ensure_ascii=False, default=str),
        version=__version__,
        run_name=run_dir.name,
        run_file=RUN_FILE,
    )


def render_report(run_dir: str | os.PathLike, out_html: str | os.PathLike | None = None) -> Path:
    """Render ``run_dir/run.json`` to one self-contained HTML file; return its path.

    ``out_html`` defaults to ``run_dir/report.html``. A figure named in the manifest but
    missing from the run directory raises :class:`ReportError`; nothing is written then.
    """
    run_dir = Path(run_dir)
    manifest = load_run(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    text = render_html(manifest, run_dir)
    out = Path(out_html) if out_html else run_dir / REPORT_FILE
    if out.is_dir():
        out = out / REPORT_FILE
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    make_readable(out)
    return out
