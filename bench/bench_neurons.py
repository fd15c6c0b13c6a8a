"""Neuron methods (issue 20): the second-order lens against a plain forward pass, and
CLIP-Dissect on 10,000 probe images.

Each measurement runs in a fresh process (``common.run_isolated``): wall time of the call
(the model is loaded and the probe images are rendered before the clock starts) and the
process's peak resident memory (imports and images included, so compare rows of one table).

* plain forward: ``encode_image`` of ``shapes:clip-vit`` on N images;
* second-order lens (N = 500, ``BENCH_LENS_IMAGES``): the effects of every neuron of layers 0-2 (3 x 384) with their
  statistics, and the whole ``explain`` (adds a second pass for the principal directions and the SpLiCE
  decompositions of 1,152 directions);
* CLIP-Dissect: ``shapes:resnet`` ``layer4`` (128 channels), ``shapes`` vocabulary (160
  concepts) scored by ``shapes:clip-vit``, on 10,000 images, for soft-WPMI and the paper's and interpcore's
  rank-reorder (``BENCH_DISSECT_SIMILARITIES``).

Run ``python bench/run --only neurons`` (or ``python bench/bench_neurons.py``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TIME_LIMIT = 1500
LENS_IMAGES = int(os.environ.get("BENCH_LENS_IMAGES", 500))
DISSECT_IMAGES = 10_000
SIMILARITIES = tuple(os.environ.get("BENCH_DISSECT_SIMILARITIES", "soft_wpmi,rank_reorder,rank_reorder_all").split(","))


def _images(n):
    import interpcore

    ds = interpcore.get_dataset("shapes", split="test", n=n)
    return ds, [ds[i]["image"] for i in range(n)]


def forward_child(n):
    import interpcore

    bb = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    _, images = _images(n)
    bb.encode_image(images[:8])
    t = time.perf_counter()
    bb.encode_image(images, batch_size=64)
    return {"seconds": time.perf_counter() - t}


def lens_child(n, whole):
    import interpcore

    bb = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    ds, images = _images(n)
    lens = interpcore.get_explainer("neurons", bb, vocabulary="shapes-attributes", batch_size=64)
    t = time.perf_counter()
    if whole:
        lens.explain(images)
    else:
        for layer in lens.layers:  # the effects alone, no statistics kept
            lens.effects(images, layer)
    return {"seconds": time.perf_counter() - t}


def dissect_child(n, similarity):
    import interpcore

    target = interpcore.get_backbone("shapes:resnet", device="cpu")
    clip = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    _, images = _images(n)
    ex = interpcore.get_explainer("dissect", target, clip=clip, layer="layer4", vocabulary="shapes",
                                  similarity=similarity)
    t = time.perf_counter()
    res = ex.explain(images)
    return {"seconds": time.perf_counter() - t, "neurons": len(res.labels)}


class _Rows(list):
    """Rows, each also printed to stderr when added (a run cut short keeps its figures)."""

    def append(self, row):
        print(" | ".join(map(str, row)), file=sys.stderr, flush=True)
        super().append(row)


def main() -> str:
    from common import fmt_bytes, machine_info, md_table, run_isolated

    env = {"INTERP_QUIET": "1"}
    rows = _Rows()
    fwd = run_isolated("bench_neurons:forward_child", LENS_IMAGES, env=env)
    rows.append(["plain forward (encode_image)", f"{LENS_IMAGES:,}", f"{fwd['result']['seconds']:.2f}",
                 f"{LENS_IMAGES / fwd['result']['seconds']:,.0f}", fmt_bytes(fwd["max_rss"]), "1.0x"])
    for whole, what in ((False, "second-order effects, 3 x 384 neurons"),
                        (True, "second-order explain (two passes, statistics, directions, SpLiCE texts)")):
        r = run_isolated("bench_neurons:lens_child", LENS_IMAGES, whole, env=env)
        s = r["result"]["seconds"]
        rows.append([what, f"{LENS_IMAGES:,}", f"{s:.2f}", f"{LENS_IMAGES / s:,.0f}", fmt_bytes(r["max_rss"]),
                     f"{s / fwd['result']['seconds']:.1f}x"])
    for sim in SIMILARITIES:
        r = run_isolated("bench_neurons:dissect_child", DISSECT_IMAGES, sim, env=env)
        s = r["result"]["seconds"]
        rows.append([f"CLIP-Dissect {sim}, 128 channels x 160 concepts", f"{DISSECT_IMAGES:,}", f"{s:.2f}",
                     f"{DISSECT_IMAGES / s:,.0f}", fmt_bytes(r["max_rss"]), ""])
    info = machine_info()
    return "\n".join([
        "## Neuron methods: second-order lens and CLIP-Dissect",
        "",
        "`shapes:clip-vit` (4 layers, width 96, 384 MLP neurons per layer) and `shapes:resnet` on the CPU; "
        "times exclude loading the models and rendering the images; memory is each fresh process's peak "
        "resident set (imports and the rendered images included).",
        "",
        md_table(["computation", "images", "seconds", "images / s", "peak RSS", "vs forward"], rows),
        "",
        f"Machine: {info.get('CPU', '?')}, {info.get('cores', '?')} cores.",
    ])


if __name__ == "__main__":
    print(main())
