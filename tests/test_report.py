"""Run manifests, self-contained HTML reports, the ``interp report`` command and figures."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from interpcore import figures
from interpcore.report import (
    ReportError,
    load_run,
    render_html,
    render_report,
    validate_manifest,
    write_run,
)


def _png(path, color=(200, 30, 30), size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _manifest(**over):
    m = {
        "method": "splice", "title": "SpLiCE on cat.png", "command": "interp splice decompose cat.png",
        "created": "2026-01-01T00:00:00+00:00", "settings": {"l1_penalty": 0.25},
        "inputs": ["cat.png"],
        "sections": [{"title": "Concepts", "text": "Longer bars are larger weights.",
                      "figures": ["figs/a.png"],
                      "tables": [{"title": "top", "columns": ["concept", "weight"],
                                  "rows": [["cat", 0.5], ["fur", 0.25]]}]}],
        "results": {"l0": 2},
    }
    m.update(over)
    return m


# -- manifests ------------------------------------------------------------------------


def test_write_run_is_valid_json_with_defaults_filled(tmp_path):
    _png(tmp_path / "figs" / "a.png")
    m = _manifest()
    del m["created"], m["command"]
    path = write_run(tmp_path, m)
    data = json.loads(path.read_text())
    assert path.name == "run.json"
    assert list(data)[:3] == ["method", "title", "command"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", data["created"])
    assert data["command"]  # filled from sys.argv
    assert data["sections"][0]["tables"][0]["rows"] == [["cat", 0.5], ["fur", 0.25]]
    assert not list(tmp_path.glob(".*.part"))  # no temporary file left behind


def test_write_run_converts_arrays_and_tensors(tmp_path):
    import torch

    write_run(tmp_path, _manifest(sections=[], results={"w": np.arange(3), "t": torch.tensor([1.5])}))
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["results"] == {"w": [0, 1, 2], "t": [1.5]}


def test_write_run_refuses_missing_figure_and_writes_nothing(tmp_path):
    with pytest.raises(ReportError, match="figure 'figs/a.png'.*Concepts.*missing"):
        write_run(tmp_path, _manifest())
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("bad, message", [
    ({"method": ""}, "needs a 'method'"),
    ({"settings": [1]}, "'settings' must be an object"),
    ({"inputs": "cat.png"}, "'inputs' must be a list"),
    ({"sections": [{"figures": "a.png"}]}, "'figures' must be a list"),
    ({"sections": [{"tables": [{"columns": ["a", "b"], "rows": [[1]]}]}]}, "row 1 has 1 cells but there are 2"),
    ({"sections": [{"figures": ["x.pdf"]}]}, "unsupported type"),
    ({"sections": [3]}, r"^section 1 of the run manifest must be an object, not int$"),
    ({"sections": [{"title": "S", "tables": [{"title": "top", "columns": ["a"], "rows": [[1, 2]]}]}]},
     r"^section 1 \('S'\), table 'top': row 1 has 2 cells but there are 1 columns$"),
    ({"inputs": "cat.png"}, r"^the run manifest's 'inputs' must be a list of paths or names, not str$"),
])
def test_bad_manifests_are_clear_errors(tmp_path, bad, message):
    with pytest.raises(ReportError, match=message):
        validate_manifest(_manifest(**bad), tmp_path)


def test_manifest_defaults_filled_and_unknown_keys_kept():
    from collections import OrderedDict

    m = validate_manifest(OrderedDict(method="prs", extra={"x": 1},
                                      sections=[{"note": "n", "tables": [{"rows": [1, (2, 3)]}]}]))
    assert m["title"] == "prs" and m["command"] == "" and m["settings"] == {} and m["results"] == {}
    assert m["extra"] == {"x": 1}
    sec = m["sections"][0]
    assert sec["title"] == "Section 1" and sec["note"] == "n" and sec["figures"] == []
    assert sec["tables"][0] == {"title": "", "columns": [], "rows": [[1], [2, 3]]}


def test_load_run_errors(tmp_path):
    with pytest.raises(ReportError, match="not found"):
        load_run(tmp_path / "nope")
    with pytest.raises(ReportError, match="has no run.json"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        load_run(tmp_path)


# -- HTML -----------------------------------------------------------------------------


def test_report_embeds_figures_and_needs_no_network(tmp_path):
    fig = _png(tmp_path / "figs" / "a.png")
    write_run(tmp_path, _manifest())
    out = render_report(tmp_path)
    assert out == tmp_path / "report.html"
    text = out.read_text()
    expected = base64.b64encode(fig.read_bytes()).decode()
    assert f'src="data:image/png;base64,{expected}"' in text
    # Self-contained: no script, no external resource of any kind.
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//|file:)""", text)
    assert "@import" not in text and "url(" not in text
    for needed in ("SpLiCE on cat.png", "interp splice decompose cat.png", "l1_penalty",
                   "Longer bars are larger weights.", "<table", "<details>", "cat.png"):
        assert needed in text, needed


def test_report_escapes_everything(tmp_path):
    evil = '<script>alert("x")</script>'
    write_run(tmp_path, _manifest(
        title=evil, command=evil, inputs=[evil], settings={evil: evil},
        sections=[{"title": evil, "text": evil, "tables": [{"title": evil, "columns": [evil], "rows": [[evil]]}]}],
        results={evil: evil}))
    text = render_report(tmp_path).read_text()
    assert "<script" not in text
    assert "&lt;script&gt;" in text


def test_report_svg_and_figure_removed_after_writing(tmp_path):
    fig = figures.bar_chart(["a", "b"], [1.0, 2.0], title="t")
    png, svg = figures.save_figure(fig, tmp_path / "figs" / "a.png", svg=True)
    write_run(tmp_path, _manifest(sections=[{"title": "S", "figures": ["figs/a.png", "figs/a.svg"]}]))
    text = render_report(tmp_path, tmp_path / "out" / "r.html").read_text()
    assert "data:image/svg+xml;base64," in text
    png.unlink()
    with pytest.raises(ReportError, match="figure 'figs/a.png' named in section 'S' is missing"):
        render_report(tmp_path, tmp_path / "again.html")
    assert not (tmp_path / "again.html").exists()


def test_text_paragraphs_and_bullets():
    html = render_html(_manifest(sections=[{"title": "S", "text": "First line\ncontinues.\n\n- a\n- b"}]), ".")
    assert "<p>First line continues.</p>" in html
    assert "<ul><li>a</li><li>b</li></ul>" in html


def test_cli_report(tmp_path):
    from interpcore.cli import cli

    _png(tmp_path / "figs" / "a.png")
    write_run(tmp_path, _manifest())
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 0, res.output
    assert "report written to" in res.output and (tmp_path / "x.html").is_file()


def test_cli_report_error_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from interpcore.cli import main; main()", "report",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "has no run.json" in proc.stderr and "Traceback" not in proc.stderr


# -- figures --------------------------------------------------------------------------


def test_save_figure_png_and_svg_readable(tmp_path):
    fig = figures.bar_chart(["x"] * 3, [0.1, 0.3, 0.2])
    paths = figures.save_figure(fig, tmp_path / "f.png", svg=True)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    with Image.open(paths[0]) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert paths[1].read_text().lstrip().startswith("<?xml")
    assert (paths[0].stat().st_mode & 0o044) == 0o044  # readable by others, not mkstemp's 0600


def test_bar_chart_orders_and_limits_bars():
    fig = figures.bar_chart(["small", "big", "mid"], [1.0, 3.0, 2.0], topk=2)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["big", "mid"]
    widths = [p.get_width() for p in ax.patches]
    assert widths == [3.0, 2.0]


def test_bar_chart_label_mismatch():
    from interpcore import InterpError

    with pytest.raises(InterpError, match="2 labels but 3 values"):
        figures.bar_chart(["a", "b"], [1, 2, 3])


def test_wrap_label_limits_lines():
    out = figures.wrap_label("a very long label " * 10, width=20, max_lines=2)
    assert out.count("\n") == 1 and out.endswith("…")
    assert all(len(line) <= 20 for line in out.splitlines())


def test_long_labels_do_not_overlap(tmp_path):
    """Tick labels of a bar chart with long texts keep apart once drawn."""
    labels = [f"concept number {i} with a rather long description attached" for i in range(12)]
    fig = figures.bar_chart(labels, np.linspace(1, 0.1, 12))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = sorted((t.get_window_extent(renderer) for t in fig.axes[0].get_yticklabels()),
                   key=lambda b: b.y0)
    for lower, upper in zip(boxes, boxes[1:]):
        assert lower.y1 <= upper.y0 + 0.5, "y tick labels overlap"


def test_overlay_resizes_patch_grid_to_image():
    fig = figures.new_figure(3, 3)
    ax = fig.add_subplot()
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    art = figures.overlay_heatmap(ax, np.zeros((32, 48, 3), dtype=np.uint8), heat)
    arr = art.get_array()
    assert arr.shape == (32, 48)
    assert arr[0, 0] > arr[-1, -1]  # the hot corner stays where it was


def test_to_rgb_array_accepts_tensors_and_rejects_bad_shapes():
    import torch

    from interpcore import InterpError

    arr = figures.to_rgb_array(torch.ones(3, 5, 7))
    assert arr.shape == (5, 7, 3) and arr.max() <= 1.0
    with pytest.raises(InterpError, match="expected an image"):
        figures.to_rgb_array(np.zeros((2, 5, 7, 3)))
    with pytest.raises(InterpError, match="heatmap must be 2-D"):
        figures.resize_map(np.zeros((2, 3, 4)), 5, 5)


def test_grids_have_one_axis_per_item_and_hide_the_rest():
    img = Image.new("RGB", (16, 16), "blue")
    fig = figures.image_grid([img] * 5, titles=[str(i) for i in range(5)], ncols=3)
    visible = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 6 and len(visible) == 5
    fig = figures.heatmap_grid(img, {"a": np.eye(4), "b": np.ones((4, 4))}, ncols=3)
    maps = [ax for ax in fig.axes if ax.axison and not hasattr(ax, "_colorbar")]
    assert [ax.get_title() for ax in maps] == ["image", "a", "b"]


def test_heatmap_overlays_keep_the_colour_maps_hue_and_have_a_colour_bar():
    import colorsys

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    # left half yellow, right half blue, under one uniform map value: both halves must show
    # the colour map's hue (only lighter or darker), not a mix with the image's colours
    arr = np.zeros((40, 40, 3), dtype=np.uint8)
    arr[:, :20] = (250, 230, 20)
    arr[:, 20:] = (20, 40, 230)
    fig = figures.heatmap_grid(Image.fromarray(arr), {"m": np.full((4, 4), 0.5)}, show_image=False,
                               shared_scale=True, colorbar_label="units", cell=3)
    (ax,) = [a for a in fig.axes if not hasattr(a, "_colorbar")]
    bars = [a for a in fig.axes if hasattr(a, "_colorbar")]
    assert len(bars) == 1 and bars[0].get_ylabel() == "units"
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    px = np.asarray(canvas.buffer_rgba())[..., :3] / 255.0
    bb = ax.get_window_extent()
    h = px.shape[0]
    y = int(h - (bb.y0 + bb.y1) / 2)
    left = px[y, int(bb.x0 + 0.25 * bb.width)]
    right = px[y, int(bb.x0 + 0.75 * bb.width)]
    hues = [colorsys.rgb_to_hsv(*c)[0] for c in (left, right)]
    import matplotlib

    want = colorsys.rgb_to_hsv(*matplotlib.colormaps["jet"](0.5)[:3])[0]
    for hue in hues:
        assert abs(hue - want) < 0.03, (hues, want)
