"""Files a FALCON run writes: JSON, CSV, PNG grids, features and ``run.json``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from interpcore.cache import atomic_path, save_tensors, write_text

MAX_GRID = 40  # images shown per grid


def _grid(images, titles, path: Path, title: str, boxes=None, cols: int = 8) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    images, titles = images[:MAX_GRID], titles[:MAX_GRID]
    n = max(1, len(images))
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (im, t) in enumerate(zip(images, titles)):
        ax = axes.flat[k]
        ax.imshow(im)
        ax.set_title(t, fontsize=7)
        if boxes is not None and k < len(boxes):
            l, tp, r, b = boxes[k]
            ax.add_patch(patches.Rectangle((l - 0.5, tp - 0.5), r - l, b - tp, fill=False,
                                           edgecolor="yellow", linewidth=1.5))
    if not images:
        axes.flat[0].text(0.5, 0.5, "(none)", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def _scores_figure(res, path: Path) -> str:
    """:func:`scores_figure` saved as PNG."""
    fig = scores_figure(res)  # (selects the Agg backend before pyplot is imported)
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def scores_figure(res):
    """One horizontal bar per scored group (label: id and features), best first, with the
    threshold; the height grows with the number of groups so every label stays readable."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    groups = sorted((g for g in res.groups if g.score is not None), key=lambda g: (-g.score, g.id))
    thr = res.settings.get("score_threshold", 0.8)
    labels = [f"group {g.id} [{_short(g.key)}]" for g in groups]
    fig, ax = plt.subplots(figsize=(7.0, 1.4 + 0.26 * len(groups)))
    ys = range(len(groups))
    ax.barh(list(ys), [g.score for g in groups], height=0.7,
            color=["tab:green" if g.interpretable else "tab:gray" for g in groups])
    for y, g in zip(ys, groups):
        ax.text(g.score + 0.005, y, f"{g.score:.3f}", va="center", fontsize=8)
    ax.axvline(thr, color="tab:red", linestyle="--")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()  # best first, at the top
    lo = min([g.score for g in groups] + [thr])
    ax.set_xlim(max(0.0, lo - 0.1), min(1.0, max([g.score for g in groups] + [thr]) + 0.08))
    ax.set_xlabel("interpretability score (mean pairwise cosine of the Grad-CAM crops)", fontsize=9)
    ax.set_title(f"{len(groups)} feature groups, "
                 f"{sum(bool(g.interpretable) for g in groups)} interpretable", fontsize=10)
    ax.legend(handles=[Patch(color="tab:green", label="interpretable"),
                       Patch(color="tab:gray", label="not interpretable"),
                       plt.Line2D([], [], color="tab:red", linestyle="--",
                                  label=f"threshold {thr:g}")],
              fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _short(key: str, most: int = 24) -> str:
    """A feature key cut to ``most`` characters (a long group's features would widen the
    figure past the report's column)."""
    return key if len(key) <= most else key[: most - 3] + "..."


def concepts_csv(groups) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["group", "features", "n_images", "score", "words", "phrases"])
    for g in groups:
        w.writerow([
            g.id, g.key, len(g.images), "" if g.score is None else f"{g.score:.4f}",
            "; ".join(f"{t}:{s:.4f}" for t, s in g.words),
            "; ".join(f"{t}:{s:.4f}" for t, s in g.phrases),
        ])
    return buf.getvalue()


def write_run_dir(res, out_dir, *, command: str, report=None, features=None, dataset=None,
                  crops=None) -> dict:
    """Write every output of ``res`` to ``out_dir`` (with ``run.json`` and, given
    ``report``, the HTML report); returns ``{name: path}``. ``dataset`` / ``crops``: as for
    :func:`write_outputs`."""
    sections, manifest = write_outputs(res, out_dir, command=command, features=features,
                                       report=report, dataset=dataset, crops=crops)
    from interpcore.report import finish_run

    finish_run(out_dir, {**manifest, "sections": sections,
                         "results": json.loads(res.to_json())}, report)
    return dict(res.files)


def write_outputs(res, out_dir, *, command: str, features=None, report=None, dataset=None,
                  crops=None):
    """Write the figures, CSV, features and ``falcon.json`` of ``res`` to ``out_dir``;
    returns ``(sections, manifest)`` for ``run.json`` (the caller writes it, e.g. with
    :meth:`interpcore.commands.Run.finish`; ``res.files`` already names ``run.json`` and the
    ``report`` to come). ``dataset``: the probe dataset (for the image grids); ``crops``:
    ``{group id: Grad-CAM crops}`` (see :meth:`Falcon.cropped`)."""
    from interpcore.torch_backbone import load_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    ds = dataset
    crops = crops or {}
    explained = set(res.explained)
    if features is not None:
        save_tensors(out / "features.safetensors", {"features": features.contiguous()},
                     {"backbone": res.backbone, "layer": res.layer, "dataset": res.dataset})
        files["features"] = "features.safetensors"
    if any(g.score is not None for g in res.groups):
        _scores_figure(res, out / "scores.png")
        files["scores"] = "scores.png"
    group_figs: dict[int, list[str]] = {}
    for g in res.groups:
        figs = []
        gdir = Path("groups") / f"g{g.id:03d}"
        if g.id in crops:
            _grid(crops[g.id], [f"img {i}" for i in g.used_images], out / gdir / "high_crops.png",
                  f"group {g.id} [{g.key}]: Grad-CAM crops of highly activating images")
            figs.append(str(gdir / "high_crops.png"))
            if ds is not None:
                ims = [load_image(ds[i]["image"]) for i in g.used_images[:MAX_GRID]]
                _grid(ims, [f"img {i}" for i in g.used_images], out / gdir / "high_images.png",
                      f"group {g.id}: highly activating images (box = crop)", boxes=g.boxes)
                figs.append(str(gdir / "high_images.png"))
        view = res.settings.get("crop_view", "crop")
        if g.id in explained and ds is not None and view != "crop" and g.boxes:
            from .steps import crop_views

            n = min(len(g.boxes), MAX_GRID)
            _grid(crop_views(ds, g.used_images[:n], g.boxes[:n], view),
                  [f"img {i}" for i in g.used_images], out / gdir / "captioned_views.png",
                  f"group {g.id}: what the captioner was shown ({view} view of each box)")
            figs.append(str(gdir / "captioned_views.png"))
        if g.id in explained and ds is not None:
            ims = [load_image(ds[i]["image"]) for i in g.low_images]
            _grid(ims, [f"img {i}" for i in g.low_images], out / gdir / "low_images.png",
                  f"group {g.id}: lowly activating images (contrast set)")
            figs.append(str(gdir / "low_images.png"))
        group_figs[g.id] = figs
    if explained:
        write_text(out / "concepts.csv", concepts_csv([g for g in res.groups if g.id in explained]))
        files["concepts"] = "concepts.csv"
    res.files = dict(files, json="falcon.json")
    write_text(out / "falcon.json", res.to_json() + "\n")

    # run.json for reports
    sections = [{
        "title": "Feature groups",
        "text": ("Each group is a set of features of the target layer together with the images "
                 "that activate exactly those features above the global threshold (mean + "
                 f"{res.settings.get('sigma', 5)} std of the per-image normalized activations). "
                 "The score is the mean pairwise cosine of the captioner's embeddings of the "
                 "groups' Grad-CAM crops; groups above the threshold (green) are interpretable."),
        "figures": [files["scores"]] if "scores" in files else [],
        "tables": [{"title": "Groups", "columns": ["group", "features", "images", "score",
                                                   "interpretable"],
                    "rows": [[g.id, g.key, len(g.images),
                              None if g.score is None else round(g.score, 4), g.interpretable]
                             for g in res.groups]}],
    }]
    for g in res.groups:
        if g.id not in explained and g.id not in crops:
            continue
        tables = []
        if g.id in explained:
            tables.append({"title": "Concepts", "columns": ["words", "score", "phrases", "score"],
                           "rows": [[w[0] if w else "", round(w[1], 4) if w else "",
                                     p[0] if p else "", round(p[1], 4) if p else ""]
                                    for w, p in _zip_longest(g.words, g.phrases)]})
            tables.append({"title": "Captions of the first crops",
                           "columns": ["image", "captions (weight)"],
                           "rows": [[img, "; ".join(f"{c} ({s:.3f})" for c, s in caps)]
                                    for img, caps in list(zip(g.used_images, g.captions_high))[:8]]})
        sections.append({
            "title": f"Group {g.id}: features [{g.key}]",
            "text": (f"{len(g.images)} highly activating images; score "
                     f"{'-' if g.score is None else f'{g.score:.3f}'}. Words and phrases come from "
                     "the captions retrieved for the crops, minus those that also describe the "
                     "lowly activating images."),
            "figures": group_figs.get(g.id, []),
            "tables": tables,
        })
    manifest = {
        "method": "falcon",
        "title": f"FALCON {command}: {res.backbone} on {res.dataset}",
        "settings": res.settings,
        "inputs": [res.backbone, res.captioner, res.dataset] + ([res.pool] if res.pool else []),
    }
    if report:
        files["report"] = str(report)
    files["run"] = "run.json"
    res.files = dict(files, json="falcon.json")
    write_text(out / "falcon.json", res.to_json() + "\n")
    return sections, manifest


def _zip_longest(a, b):
    from itertools import zip_longest

    return list(zip_longest(a, b))
