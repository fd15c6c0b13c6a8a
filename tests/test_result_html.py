"""Results render in Jupyter: ``Result._repr_html_`` gives a compact, escaped table, the
result's ``figure()`` inline as a PNG data URI, and its printout folded."""

from __future__ import annotations

import base64
import dataclasses
import re

import numpy as np
import pytest

from interpcore import InterpError
from interpcore.base import Result


@dataclasses.dataclass
class _Plain(Result):
    name: str
    score: float
    labels: list
    weights: object
    few: object
    extra: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        return f"plain result {self.name}"


@dataclasses.dataclass
class _WithFigure(Result):
    values: list

    def figure(self):
        from interpcore.figures import bar_chart

        return bar_chart([str(i) for i in range(len(self.values))], self.values)


@dataclasses.dataclass
class _BrokenFigure(Result):
    values: list

    def figure(self):
        raise InterpError("nothing to draw for an empty result")


def _rows(html):
    return dict(re.findall(r"<tr><th[^>]*>(.*?)</th><td[^>]*>(.*?)</td></tr>", html))


def test_table_of_fields_scalars_short_lists_and_shapes():
    torch = pytest.importorskip("torch")
    r = _Plain(name="<b>cat</b>", score=0.123456, labels=list(range(20)),
               weights=torch.zeros(3, 512), few=np.array([1.5, 2.0]), extra={"k": 1})
    html = r._repr_html_()
    rows = _rows(html)
    assert list(rows) == ["name", "score", "labels", "weights", "few", "extra"]
    assert rows["name"] == "&lt;b&gt;cat&lt;/b&gt;"  # escaped
    assert rows["score"] == "0.1235"
    assert rows["labels"] == "list of 20"
    assert rows["weights"] == "tensor (3, 512) float32"
    assert rows["few"] == "[1.5, 2]"
    assert rows["extra"] == "{k: 1}"
    assert "<pre>plain result &lt;b&gt;cat&lt;/b&gt;</pre>" in html
    assert "<img" not in html and "<script" not in html


def test_figure_is_inline_png():
    html = _WithFigure([3.0, 1.0, 2.0])._repr_html_()
    (uri,) = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    assert _rows(html)["values"] == "[3, 1, 2]"


def test_a_figure_that_cannot_be_drawn_is_one_note_not_an_error():
    html = _BrokenFigure([])._repr_html_()
    assert "no figure: nothing to draw for an empty result" in html and "<img" not in html


def test_a_method_result_renders():
    """A real SpLiCE result from the shapes world renders with its fields."""
    import interpcore

    bb = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    splice = interpcore.get_decomposer("splice", bb, vocabulary="shapes", l1_penalty=0.25)
    res = splice.decompose(["examples/red_circle.png"])
    html = res._repr_html_()
    rows = _rows(html)
    assert rows["backbone"] == "shapes:clip-vit" and rows["vocabulary"] == "shapes"
    assert rows["weights"].startswith("tensor (1, ")
    assert "Concept Decomposition of" in html
    assert html.count('<img src="data:image/png;base64,') == 1  # its figure(): the top concepts
