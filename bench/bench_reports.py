"""Reports and figures: cost of the figures a method run writes and of rendering its report.

A run folder like a method's (concept bars, a heatmap grid, an image grid, a curve; 24
figures in all) is written with :mod:`interpcore.figures`, then rendered with
:func:`interpcore.report.render_report`. Target: rendering adds well under a second to a
run, and the self-contained HTML stays a small multiple of the figures' size (base64 adds
a third).

Run: ``python bench/bench_reports.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_bytes, fmt_seconds, md_table, peak_traced, time_call  # noqa: E402

TIME_LIMIT = 120
N_EACH = 6


def _figures(run: Path) -> dict[str, list[str]]:
    import numpy as np
    from PIL import Image

    from interpcore import figures

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224] / 224.0
    img = Image.fromarray((np.stack([yy, xx, 0.5 + 0.5 * np.sin(8 * xx)], -1) * 255).astype("uint8"))
    words = [f"concept {i} of a vocabulary" for i in range(20)]
    made = {"bars": [], "heatmaps": [], "grids": [], "curves": []}
    for i in range(N_EACH):
        p = figures.save_figure(figures.bar_chart(words, rng.random(20), topk=15, title=f"image {i}"),
                                run / f"bars{i}.png")[0]
        made["bars"].append(p.name)
        maps = {f"text {j}": np.outer(rng.random(14), rng.random(14)) for j in range(5)}
        p = figures.save_figure(figures.heatmap_grid(img, maps, title="maps"), run / f"heat{i}.png")[0]
        made["heatmaps"].append(p.name)
        p = figures.save_figure(figures.image_grid([img] * 12, titles=[str(j) for j in range(12)]),
                                run / f"grid{i}.png")[0]
        made["grids"].append(p.name)
        p = figures.save_figure(figures.line_plot(list(range(12)), {"acc": rng.random(12)}),
                                run / f"curve{i}.png")[0]
        made["curves"].append(p.name)
    return made


def main() -> str:
    from interpcore.report import render_report, write_run

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        t = time_call(_figures, run, repeat=1, warmup=0)
        made = t["result"]
        n_fig = sum(len(v) for v in made.values())
        fig_bytes = sum((run / f).stat().st_size for v in made.values() for f in v)
        rows.append([f"write {n_fig} figures (PNG)", fmt_seconds(t["median"] / n_fig) + " per figure",
                     fmt_bytes(fig_bytes) + " in all"])
        write_run(run, {"method": "bench", "sections": [
            {"title": k, "text": "", "figures": v} for k, v in made.items()]})
        r = time_call(render_report, run, Path(tmp) / "r.html", repeat=5, warmup=1)
        size = (Path(tmp) / "r.html").stat().st_size
        _, peak = peak_traced(render_report, run, Path(tmp) / "r2.html")
        rows.append(["render the HTML report", fmt_seconds(r["median"]) + " (median of 5)",
                     f"{fmt_bytes(size)} ({size / fig_bytes:.2f}x the figures); "
                     f"peak traced memory {fmt_bytes(peak)}"])
    return ("## Reports and figures\n\n"
            f"A run folder with {n_fig} figures ({N_EACH} each of concept bars, 5-map heatmap "
            "grids, 12-image grids, curves) written with `interpcore.figures`, then rendered to "
            "one self-contained HTML file. Comparison: the HTML against the figures it embeds "
            "(base64 costs 4/3).\n\n"
            + md_table(["step", "time", "size"], rows))


if __name__ == "__main__":
    print(main())
