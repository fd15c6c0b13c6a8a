"""examples/shapes_world.ipynb runs from top to bottom in a real Jupyter kernel (nbclient),
each method's result renders as HTML, and the notebook is stored with its outputs stripped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "shapes_world.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def _html(cell) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs
                   if o.output_type == "execute_result")


@pytest.mark.slow
def test_notebook_runs_and_results_render(tmp_path, monkeypatch):
    # the kernel inherits this process's environment: a private cache, no progress bars
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INTERP_QUIET", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=900,
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    code = [c for c in nb.cells if c.cell_type == "code"]
    rendered = {name: [c for c in code if f">{name}</caption>" in _html(c)]
                for name in ("SpliceResult", "TextSpanResult", "FalconResult")}
    for name, cells in rendered.items():
        assert len(cells) == 1, f"no rendered {name}"
        assert "<script" not in _html(cells[0])
    splice_html = _html(rendered["SpliceResult"][0])
    assert "shapes:clip-vit" in splice_html and "Concept Decomposition of" in splice_html
    # PRS is exact: the cell's value is the sum's relative error
    prs = next(c for c in code if "max_relative_error" in c.source)
    (value,) = [o["data"]["text/plain"] for o in prs.outputs if o.output_type == "execute_result"]
    assert float(value) < 1e-4
    assert re.search(r"\d+ interpretable", "".join(o.get("text", "") for c in code for o in c.outputs)
                     + _html(rendered["FalconResult"][0]))
