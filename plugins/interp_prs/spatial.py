"""Spatial maps from per-patch PRS: text heatmaps and zero-shot segmentation.

A head's per-patch contribution ``c[l, h, t]`` (in the joint image-text space) projected on
a text embedding says how much patch ``t`` pushes the image embedding, through that head,
towards the text. Summing over chosen layers and heads gives a map over patches.

Zero-shot segmentation (the paper's Section 6.1 recipe): the class map is the patch scores
of the predicted class minus their mean over all classes; it is upsampled bilinearly to the
mask, clipped at 0, min-max normalized and thresholded at its mean. Evaluated with pixel
accuracy, mean IoU over {background, object} and mean average precision (AP of the
continuous map for the object and of its complement for the background, averaged).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from interpcore import InterpError, Result


def patch_maps(decomposition, directions, layers=None, heads=None) -> torch.Tensor:
    """Maps (N, k, gh, gw): per-patch contributions of the chosen layers / heads projected
    on ``directions`` (k, D). ``heads``: list of (layer, head) pairs (overrides ``layers``)."""
    if not decomposition.per_patch:
        raise InterpError("patch maps need a per-patch decomposition (per_patch=True)")
    d = torch.as_tensor(directions, dtype=torch.float32)
    if d.dim() == 1:
        d = d[None]
    h = decomposition.heads  # (N, Lh, H, T, D)
    rec = decomposition.head_layers
    if heads is not None:
        parts = []
        for (li, hi) in heads:
            li = li + max(rec) + 1 if li < 0 else li
            if li not in rec:
                raise InterpError(f"layer {li} was not decomposed per patch (have {rec})")
            if not 0 <= hi < h.shape[2]:
                raise InterpError(f"head {hi} does not exist; the model has {h.shape[2]} heads")
            parts.append(h[:, rec.index(li), hi])  # (N, T, D)
        summed = torch.stack(parts, 1).sum(1)
    else:
        if layers is not None:
            idx = []
            for li in layers:
                li = li + max(rec) + 1 if li < 0 else li
                if li not in rec:
                    raise InterpError(f"layer {li} was not decomposed per patch (have {rec})")
                idx.append(rec.index(li))
            h = h[:, idx]
        summed = h.sum(dim=(1, 2))  # (N, T, D)
    scores = summed[:, 1:] @ d.T  # drop the class token -> (N, P, k)
    gh, gw = decomposition.grid_size
    return scores.permute(0, 2, 1).reshape(scores.shape[0], d.shape[0], gh, gw)


def head_patch_maps(decomposition, direction, layers=None) -> dict:
    """The joint head x patch view: ``{"L{l}.H{h}": (N, gh, gw) map}`` for every recorded head
    of ``layers`` (default: all recorded), each projected on one ``direction`` (D,)."""
    rec = decomposition.head_layers
    layers = rec if layers is None else [li + max(rec) + 1 if li < 0 else li for li in layers]
    out = {}
    for li in layers:
        for hi in range(decomposition.heads.shape[2]):
            out[f"L{li}.H{hi}"] = patch_maps(decomposition, direction, heads=[(li, hi)])[:, 0]
    return out


# --------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class SegmentationResult(Result):
    backbone: str
    dataset: str
    n_images: int
    pixel_accuracy: float
    miou: float
    iou: dict  # {"background": float, "object": float}
    map: float
    threshold: str
    figures: list = dataclasses.field(default_factory=list)
    job: str | None = None  #: the job folder of the per-image maps

    def __str__(self) -> str:
        return (f"Zero-shot segmentation: {self.backbone} on {self.dataset} ({self.n_images} images)\n"
                f"  pixel accuracy {100 * self.pixel_accuracy:.2f}%  mIoU {self.miou:.3f} "
                f"(background {self.iou['background']:.3f}, object {self.iou['object']:.3f})  "
                f"mAP {self.map:.3f}")


def class_map(maps: torch.Tensor, chosen) -> torch.Tensor:
    """(N, K, gh, gw) class maps -> (N, gh, gw): chosen class minus the mean over classes."""
    idx = torch.as_tensor(chosen).long()
    sel = maps[torch.arange(maps.shape[0]), idx]
    return sel - maps.mean(1)


def normalize_map(m: torch.Tensor, size) -> torch.Tensor:
    """Upsample (gh, gw) -> size bilinearly, clip at 0, min-max to [0, 1]."""
    up = F.interpolate(m[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    up = up.clamp_min(0)
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)


def _average_precision(scores: np.ndarray, target: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if target.min() == target.max():
        return float("nan")
    return float(average_precision_score(target, scores))


class SegmentationMeter:
    """Accumulates pixel accuracy, IoU of {background, object} and per-image AP."""

    def __init__(self):
        self.correct = self.labeled = 0
        self.inter = np.zeros(2)
        self.union = np.zeros(2)
        self.aps: list[float] = []

    def add(self, heat: np.ndarray, target: np.ndarray, threshold="mean"):
        t = (np.asarray(target) > 0).astype(np.int64)
        thr = float(heat.mean()) if threshold == "mean" else float(threshold)
        pred = (heat > thr).astype(np.int64)
        self.correct += int((pred == t).sum())
        self.labeled += t.size
        for c in (0, 1):
            self.inter[c] += int(((pred == c) & (t == c)).sum())
            self.union[c] += int(((pred == c) | (t == c)).sum())
        ap_fg = _average_precision(heat.ravel(), t.ravel())
        ap_bg = _average_precision(1 - heat.ravel(), 1 - t.ravel())
        aps = [a for a in (ap_fg, ap_bg) if not np.isnan(a)]
        if aps:
            self.aps.append(float(np.mean(aps)))
        return pred

    def summary(self) -> dict:
        iou = self.inter / np.maximum(self.union, 1)
        return {"pixel_accuracy": self.correct / max(self.labeled, 1),
                "iou": {"background": float(iou[0]), "object": float(iou[1])},
                "miou": float(iou.mean()),
                "map": float(np.mean(self.aps)) if self.aps else float("nan")}


def input_size(backbone) -> tuple[int, int]:
    """The (H, W) of the backbone's input pixels (from its preprocessing of a tiny image)."""
    shape = getattr(backbone, "pixel_shape", None)  # TorchBackbone: found without a warning
    if shape:
        return int(shape[-2]), int(shape[-1])
    from PIL import Image

    px = backbone.preprocess(Image.new("RGB", (8, 8)))
    return int(px.shape[-2]), int(px.shape[-1])


def segment_dataset(decomposer, dataset, weights, *, limit=None, batch_size: int = 16,
                    layers=None, threshold="mean", out_dir=None, n_figures: int = 6,
                    desc: str = "segmentation", job_dir=None, names: dict | None = None,
                    shard_size: int = 256, **run_args) -> SegmentationResult:
    """Zero-shot segmentation of every image with a ``mask`` in ``dataset``.

    ``weights`` (K, D): class text embeddings (a zero-shot classifier); the predicted class
    of each image picks its map. Images are resized to the model's input size (no crop), so
    the map covers the whole image and is upsampled to the mask's own size. The maps are a
    sharded, resumable job (:meth:`PRSDecomposer.segment_maps` per batch) in ``job_dir``
    (default: the user cache), run in this process on ``decomposer`` and ``dataset``, or,
    with ``names`` (the job's ``dataset``, ``split``, ``dataset_options``, ``backbone``,
    ``backbone_options``), built from those names by the engine of ``run_args``
    (``engine``, ``address``, ``num_workers``, ...); the metrics are computed here from the
    job's maps and the dataset's masks. ``desc`` is accepted for older callers.
    """
    from .decompose import job_spec, object_names

    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n == 0:
        raise InterpError("the dataset has no images")
    W = torch.as_tensor(weights, dtype=torch.float32)
    layer_list = None if layers is None else (int(layers) if isinstance(layers, int) else
                                              [int(li) for li in layers])
    spec = job_spec(**(names or object_names(decomposer, dataset, limit)),
                    verb="segment_maps", batch_size=batch_size, shard_size=shard_size,
                    limit=None if limit is None else int(limit),
                    call_options={"weights": W.tolist(), "layers": layer_list})
    job = _run_job(spec, job_dir, decomposer, objects=names is None or
                   run_args.get("engine", "local") == "local", **run_args)
    maps = job.load("class_map")
    meter = SegmentationMeter()
    figures_written = []
    examples = []
    used = 0
    for i in range(n):
        s = dataset[i]
        if s.get("mask") is None:
            continue
        mask = np.asarray(s["mask"])
        heat = normalize_map(torch.from_numpy(np.asarray(maps[i])), mask.shape).numpy()
        pred = meter.add(heat, mask, threshold)
        used += 1
        if len(examples) < n_figures:
            examples.append((s["image"], heat, pred, mask))
    if used == 0:
        raise InterpError(f"no image of '{getattr(dataset, 'name', '?')}' has a mask to segment against")
    summ = meter.summary()
    if out_dir is not None and examples:
        figures_written = save_segmentation_figures(examples, Path(out_dir))
    return SegmentationResult(
        backbone=decomposer.backbone.name, dataset=getattr(dataset, "name", "?"), n_images=used,
        pixel_accuracy=summ["pixel_accuracy"], miou=summ["miou"], iou=summ["iou"], map=summ["map"],
        threshold=str(threshold), figures=[str(p) for p in figures_written], job=job.out_dir,
    )


def _run_job(spec, job_dir, decomposer, *, objects: bool, **run_args):
    """``run_job`` into ``job_dir`` (default: the user cache), on ``decomposer`` and its
    backbone when ``objects`` (the local engine in this process)."""
    from interpcore.engine import default_job_dir, run_job

    if objects:
        run_args.update(backbone=decomposer.backbone, method=decomposer)
    return run_job(spec, default_job_dir(spec) if job_dir is None else job_dir, **run_args)


def save_segmentation_figures(examples, out_dir: Path) -> list[Path]:
    from interpcore import figures

    written = []
    for i, (img, heat, pred, mask) in enumerate(examples):
        fig = figures.heatmap_grid(
            img, {"class heatmap": heat, "predicted mask": pred.astype(float),
                  "true mask": (np.asarray(mask) > 0).astype(float)},
            ncols=4, title=f"zero-shot segmentation, example {i}", alpha=0.6)
        written += figures.save_figure(fig, out_dir / f"segmentation_{i:02d}.png")
    return written
