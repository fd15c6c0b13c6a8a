"""Results in Jupyter: the HTML behind :meth:`interpcore.base.Result._repr_html_`.

A result shows as a compact table, one row per dataclass field: scalars as they are, short
lists (up to :data:`MAX_ITEMS` items) inline, anything larger as its length or its shape and
dtype (nothing is converted in full, so a result holding large tensors renders at once).
If the result's class has a ``figure()`` method (no arguments, returning a matplotlib
figure), the figure is embedded as a PNG ``data:`` URI; ``str(result)`` follows, folded.
The page is ``templates/result.html.j2`` with autoescape on.
"""

from __future__ import annotations

import base64
import dataclasses
import io

#: Lists, tuples, dicts and 1-D arrays up to this length are shown item by item.
MAX_ITEMS = 8
#: Longer strings (and the folded printout) are cut here.
MAX_CHARS = 200
MAX_TEXT = 5000


def _scalar(value) -> str | None:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None or isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_CHARS else value[:MAX_CHARS] + "…"
    return None


def cell(value) -> str:
    """A field's value as a short line of text."""
    text = _scalar(value)
    if text is not None:
        return text
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        shape = tuple(int(s) for s in shape)
        kind = "tensor" if hasattr(value, "detach") else "array"
        size = 1
        for s in shape:
            size *= s
        if len(shape) == 0:
            return cell(value.item())
        if len(shape) == 1 and size <= MAX_ITEMS:
            return cell(value.tolist())
        dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
        return f"{kind} {shape} {dtype}".rstrip()
    if isinstance(value, (list, tuple)):
        items = [_scalar(v) for v in value]
        if len(value) <= MAX_ITEMS and None not in items:
            return "[" + ", ".join(items) + "]"
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, dict):
        items = [(_scalar(k), _scalar(v)) for k, v in value.items()]
        if len(value) <= MAX_ITEMS and all(k is not None and v is not None for k, v in items):
            return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
        return f"dict of {len(value)}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return type(value).__name__
    return _scalar(str(value)) or ""


def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt  # a figure made through pyplot stays open otherwise

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def result_html(result) -> str:
    """The notebook HTML of a :class:`~interpcore.base.Result`."""
    from .errors import InterpError
    from .report import template

    if dataclasses.is_dataclass(result):
        rows = [(f.name, cell(getattr(result, f.name))) for f in dataclasses.fields(result)]
    else:
        rows = [(k, cell(v)) for k, v in vars(result).items() if not k.startswith("_")]
    figures, note = [], ""
    make = getattr(result, "figure", None)
    if callable(make):
        try:
            fig = make()
            if fig is not None:
                figures.append(_png_data_uri(fig))
        except (InterpError, ValueError, TypeError, RuntimeError) as exc:
            note = f"no figure: {exc}"
    text = ""
    if type(result).__str__ is not object.__str__:
        text = str(result)
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + "\n…"
    return template("result.html.j2").render(
        name=type(result).__name__, rows=rows, figures=figures, note=note, text=text)
