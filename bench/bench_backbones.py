"""Backbone loading and encoding overhead (issue 3).

Targets:

* ``interp backbones list 'open_clip:*ViT-B*'`` and ``'timm:resnet*'`` stay under 1 s and never
  import torch (the timm table is parsed from source once, then read from the cache);
* loading ``open_clip:ViT-B-32`` from a local checkpoint through interpcore costs at most
  10% more than ``open_clip.create_model(..., pretrained=file)`` alone (the interpcore loader
  adds key/shape checks and the offline-aware lookup);
* ``encode_image`` adds no measurable cost over calling the model directly (< 5%).

The checkpoint is ViT-B-32 with random weights written to a temporary folder (fp32
safetensors, ~600 MB), so no download is needed; weights do not change the timings.

Run: ``python bench/bench_backbones.py`` (prints the markdown section ``main()`` returns).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

THREADS = 2
PROBE = (
    "import sys\nfrom interpcore import cli\n"
    "try:\n    cli.main({args!r})\nexcept SystemExit:\n    pass\n"
    "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
)


def listing(args, repeats: int = 5, env=None):
    times, torch_seen = [], False
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True,
                           text=True, env=env)
        times.append(time.perf_counter() - t0)
        torch_seen |= not r.stderr.rstrip().endswith("NOTORCH")
    return statistics.median(times), max(times), torch_seen


def _median_time(fn, repeats=3):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _paired(a, b, repeats=3):
    """Median times of ``a`` and ``b`` run alternately (a, b, a, b, ...)."""
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def loading_and_encoding(folder):
    import logging

    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(THREADS)
    logging.disable(logging.WARNING)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = os.path.join(folder, "vit-b-32.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    del model

    import interpcore

    # interleaved, so that a change in machine load hits both sides alike
    t_open_clip, t_interp = _paired(
        lambda: open_clip.create_model("ViT-B-32", pretrained=path),
        lambda: interpcore.get_backbone("open_clip:ViT-B-32", pretrained=path, device="cpu"),
    )

    bb = interpcore.get_backbone("open_clip:ViT-B-32", pretrained=path, device="cpu")
    x = torch.randn(32, 3, 224, 224)

    def direct():
        with torch.no_grad():
            bb.model.encode_image(x)

    def wrapped():
        bb.encode_image(x, batch_size=32)

    direct()
    wrapped()
    t_direct, t_wrapped = _paired(direct, wrapped, 5)
    return t_open_clip, t_interp, t_direct, t_wrapped


def main() -> str:
    lines = [
        "## Backbones",
        "",
        "Listing: wall time of a fresh process running the list command (median and worst of 5),",
        "and whether torch was imported. Target: under 1 s, no torch.",
        "",
        "| command | median (s) | worst (s) | imports torch |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, INTERP_CACHE_DIR=cache, INTERP_QUIET="1")
        cold = listing(["backbones", "list", "timm:resnet*"], repeats=1, env=env)
        for args in (["backbones", "list", "open_clip:*ViT-B*"], ["backbones", "list", "timm:resnet*"],
                     ["backbones", "list"]):
            med, worst, seen = listing(args, env=env)
            lines.append(f"| `interp {' '.join(args)}` | {med:.3f} | {worst:.3f} | {'yes' if seen else 'no'} |")
        lines.append(f"| `interp backbones list 'timm:resnet*'` (cold: timm source parsed) | {cold[0]:.3f} | {cold[1]:.3f} | {'yes' if cold[2] else 'no'} |")
    with tempfile.TemporaryDirectory() as folder:
        t_oc, t_ic, t_direct, t_wrapped = loading_and_encoding(folder)
    lines += [
        "",
        f"ViT-B-32 on CPU ({THREADS} threads), local fp32 safetensors checkpoint, median of 3 loads",
        "and 5 encodes of a 32-image batch, library and interpcore calls alternating.",
        "Targets: loader overhead <= 10%, encode overhead < 5%.",
        "",
        "| what | seconds | vs. plain library |",
        "|---|---|---|",
        f"| `open_clip.create_model('ViT-B-32', pretrained=file)` | {t_oc:.2f} | |",
        f"| `get_backbone('open_clip:ViT-B-32', pretrained=file)` | {t_ic:.2f} | {100 * (t_ic / t_oc - 1):+.0f}% |",
        f"| `model.encode_image(x)` under no_grad, 32 images | {t_direct:.2f} | |",
        f"| `backbone.encode_image(x)`, 32 images | {t_wrapped:.2f} | {100 * (t_wrapped / t_direct - 1):+.0f}% |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main())
