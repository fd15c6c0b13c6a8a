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
Everything taken from the manifest is HTML-escaped.

This module imports only the standard library (and :mod:`interpcore.base` for JSON
conversion), so method commands can call it without slowing the CLI down.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
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

    Raises :class:`ReportError` naming the first problem. With ``run_dir``, also checks that
    every figure file exists there.
    """
    if not isinstance(manifest, Mapping):
        raise ReportError(f"a run manifest must be a JSON object, got {type(manifest).__name__}")
    m = dict(manifest)
    if not isinstance(m.get("method"), str) or not m["method"]:
        raise ReportError("the run manifest needs a 'method' string (e.g. \"splice\")")
    m.setdefault("title", m["method"])
    m.setdefault("command", "")
    m.setdefault("created", "")
    m.setdefault("settings", {})
    m.setdefault("inputs", [])
    m.setdefault("sections", [])
    m.setdefault("results", {})
    for key in ("title", "command", "created"):
        if not isinstance(m[key], str):
            m[key] = str(m[key])
    if not isinstance(m["settings"], Mapping):
        raise ReportError("the run manifest's 'settings' must be an object (name -> value)")
    if isinstance(m["inputs"], (str, os.PathLike)) or not isinstance(m["inputs"], (list, tuple)):
        raise ReportError("the run manifest's 'inputs' must be a list of paths or names")
    if not isinstance(m["sections"], (list, tuple)):
        raise ReportError("the run manifest's 'sections' must be a list")
    sections = []
    for i, sec in enumerate(m["sections"]):
        where = f"section {i + 1}"
        if not isinstance(sec, Mapping):
            raise ReportError(f"{where} of the run manifest must be an object")
        sec = dict(sec)
        sec.setdefault("title", f"Section {i + 1}")
        sec.setdefault("text", "")
        sec.setdefault("figures", [])
        sec.setdefault("tables", [])
        if isinstance(sec["figures"], (str, os.PathLike)) or not isinstance(sec["figures"], (list, tuple)):
            raise ReportError(f"{where} ('{sec['title']}'): 'figures' must be a list of paths")
        sec["figures"] = [str(f) for f in sec["figures"]]
        if not isinstance(sec["tables"], (list, tuple)):
            raise ReportError(f"{where} ('{sec['title']}'): 'tables' must be a list")
        tables = []
        for j, tab in enumerate(sec["tables"]):
            if not isinstance(tab, Mapping):
                raise ReportError(f"{where}, table {j + 1}: a table must be an object")
            tab = dict(tab)
            tab.setdefault("title", "")
            tab.setdefault("columns", [])
            tab.setdefault("rows", [])
            cols = list(tab["columns"])
            rows = [list(r) if isinstance(r, (list, tuple)) else [r] for r in tab["rows"]]
            for k, r in enumerate(rows):
                if cols and len(r) != len(cols):
                    raise ReportError(
                        f"{where}, table '{tab['title'] or j + 1}': row {k + 1} has {len(r)} "
                        f"cells but there are {len(cols)} columns"
                    )
            tab["columns"], tab["rows"] = cols, rows
            tables.append(tab)
        sec["tables"] = tables
        sections.append(sec)
    m["sections"] = sections
    if run_dir is not None:
        for sec in sections:
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


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    elif value is None:
        text = ""
    else:
        text = str(value)
    cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{cls}>{_e(text)}</td>"


def _paragraphs(text: str) -> str:
    """Plain text to HTML: blank lines separate paragraphs, lines starting '- ' are bullets."""
    out = []
    for block in str(text).strip().split("\n\n"):
        lines = [ln.rstrip() for ln in block.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        if all(ln.lstrip().startswith(("- ", "* ")) for ln in lines):
            items = "".join(f"<li>{_e(ln.lstrip()[2:])}</li>" for ln in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_e(' '.join(ln.strip() for ln in lines))}</p>")
    return "\n".join(out)


def _table(tab: dict) -> str:
    parts = ['<div class="tablewrap"><table>']
    if tab["title"]:
        parts.append(f"<caption>{_e(tab['title'])}</caption>")
    if tab["columns"]:
        parts.append("<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in tab["columns"]) + "</tr></thead>")
    parts.append("<tbody>")
    for row in tab["rows"]:
        parts.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _value(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 2px solid #d5d9e0; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 8px; }
.meta { color: #555f70; margin: 0 0 12px; }
.meta code { background: #eceff3; padding: 1px 5px; border-radius: 4px; word-break: break-all; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 16px 20px;
  margin: 0 0 18px; }
.text p, .text ul { max-width: 80ch; margin: 0 0 8px; }
.how { color: #3b4456; }
figure { margin: 12px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e6eb;
  background: #fff; }
figcaption { color: #6a7385; font-size: 13px; margin-top: 4px; }
.tablewrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #dde1e7; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
ul.inputs { margin: 0; padding-left: 20px; word-break: break-all; }
details summary { cursor: pointer; font-weight: 600; }
pre { background: #f1f3f6; padding: 10px; overflow-x: auto; font-size: 13px;
  white-space: pre-wrap; word-break: break-word; }
nav ol { margin: 0; padding-left: 22px; }
footer { color: #7a8393; font-size: 12px; margin-top: 24px; }
"""


def render_html(manifest: Mapping, run_dir: str | os.PathLike) -> str:
    """The report for ``manifest`` (figures read from ``run_dir``) as an HTML string."""
    from . import __version__
    from .base import to_jsonable

    run_dir = Path(run_dir)
    m = validate_manifest(manifest)
    title = m["title"] or m["method"]
    body = [f"<header><h1>{_e(title)}</h1>"]
    meta = [f"method <strong>{_e(m['method'])}</strong>"]
    if m["created"]:
        meta.append(f"created {_e(m['created'])}")
    body.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if m["command"]:
        body.append(f'<p class="meta">command: <code>{_e(m["command"])}</code></p>')
    body.append("</header>")

    if len(m["sections"]) > 1:
        items = "".join(
            f'<li><a href="#s{i + 1}">{_e(s["title"])}</a></li>' for i, s in enumerate(m["sections"])
        )
        body.append(f'<nav class="card"><h2>Contents</h2><ol>{items}</ol></nav>')

    body.append('<section class="card"><h2>Inputs</h2>')
    if m["inputs"]:
        body.append('<ul class="inputs">' + "".join(f"<li>{_e(_value(x))}</li>" for x in m["inputs"]) + "</ul>")
    else:
        body.append("<p>(none recorded)</p>")
    body.append("</section>")

    body.append('<section class="card"><h2>Settings</h2>')
    if m["settings"]:
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td>{_e(_value(to_jsonable(v)))}</td></tr>"
            for k, v in m["settings"].items()
        )
        body.append(f'<div class="tablewrap"><table><tbody>{rows}</tbody></table></div>')
    else:
        body.append("<p>(defaults)</p>")
    body.append("</section>")

    for i, sec in enumerate(m["sections"]):
        body.append(f'<section class="card" id="s{i + 1}"><h2>{_e(sec["title"])}</h2>')
        if sec["text"]:
            body.append(f'<div class="text how">{_paragraphs(sec["text"])}</div>')
        for fig in sec["figures"]:
            path = _figure_path(run_dir, fig, sec["title"])
            alt = f"{sec['title']}: {Path(fig).name}"
            body.append(
                f'<figure><img src="{_data_uri(path)}" alt="{_e(alt)}">'
                f"<figcaption>{_e(fig)}</figcaption></figure>"
            )
        for tab in sec["tables"]:
            body.append(_table(tab))
        body.append("</section>")

    results = json.dumps(to_jsonable(m["results"]), indent=2, ensure_ascii=False, default=str)
    body.append(
        '<section class="card"><details><summary>Results (JSON)</summary>'
        f"<pre>{_e(results)}</pre></details></section>"
    )
    body.append(
        f"<footer>Written by interpcore {_e(__version__)} from {_e(run_dir.name)}/{RUN_FILE}."
        " Self-contained: images are embedded; the page makes no network request.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No request of any kind may leave the page, not even for a favicon.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
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
