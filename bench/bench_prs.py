"""PRS memory and speed on a ViT-B/16-sized CLIP image tower (random weights, CPU).

Targets (issue 7):

* peak memory of the per-patch decomposition of one image at least 20x below the naive
  computation that materializes the full (tokens x tokens x heads x width) tensor of every
  layer (what the paper's reference code does), on the same model;
* time per image at most 3x a plain ``encode_image``.

Memory: each variant runs in a fresh process and is run once to warm up (kernels, buffers);
freed memory is handed back to the OS (``malloc_trim``) and the peak resident set size is
reset (``/proc/self/clear_refs``) right before the measured call, and the figure is the peak
during the call minus the resident size before it (everything the call allocates is counted,
its output included). Where the reset is
not available the whole process's ``ru_maxrss`` difference is used and the table says so.

The reference's own per-patch path (``prs_hook.py`` of yossigandelsman/clip_text_span with
its modified open_clip, ``attn_method="head"`` then ``finalize``) is measured too when
``INTERP_REFERENCE_TEXT_SPAN`` names a checkout of that repository (and ``einops``, which it
needs, is installed); its code is never part of this repository. Without it the table says
"not measured".

Run: ``python bench/bench_prs.py`` (prints the markdown section ``main()`` returns).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
TIME_LIMIT = 1200
THREADS = 2
CFG = dict(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0, output_dim=512)
SIZES = {"ViT-B-16": CFG, "ViT-B-32": dict(CFG, patch_size=32)}
REFERENCE_ENV = "INTERP_REFERENCE_TEXT_SPAN"


def _backbone(size: str = "ViT-B-16"):
    import torch
    from open_clip.transformer import VisionTransformer

    from interp_open_clip.vit_stream import OpenClipViTStream
    from interpcore import Capability
    from interpcore.torch_backbone import TorchBackbone

    torch.manual_seed(0)
    visual = VisionTransformer(**SIZES[size]).eval()

    class Tower(TorchBackbone):
        def _encode_image(self, pixels):
            return self.model(pixels)

        def residual_stream(self):
            return OpenClipViTStream(self.model, "ViT-B/16-sized random tower")

    return Tower("bench:vit-b-16", visual, device="cpu", embed_dim=CFG["output_dim"],
                 capabilities=[Capability.IMAGE_ENCODER, Capability.VIT_RESIDUAL_STREAM])


def _status_kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _reference_model(size: str):
    """The reference's own CLIP with its PRS logger hooked in (random weights)."""
    checkout = os.environ.get(REFERENCE_ENV)
    if not checkout or not Path(checkout, "prs_hook.py").is_file():
        raise RuntimeError(f"set {REFERENCE_ENV} to a checkout of yossigandelsman/clip_text_span")
    sys.path.insert(0, checkout)
    import torch

    try:
        from prs_hook import hook_prs_logger
        from utils.factory import create_model
    except ImportError as exc:
        raise RuntimeError(f"the reference code does not import here ({exc}); pip install einops") from None
    torch.manual_seed(0)
    model = create_model(size, pretrained=None, device="cpu").eval()
    return model, hook_prs_logger(model, "cpu", spatial=True)


def measure_memory(mode: str, size: str = "ViT-B-16") -> dict:
    """Peak extra memory (bytes) of one image's per-patch decomposition, in this process.

    ``mode``: ``ours``, ``naive`` (interpcore's own full-tensor code) or ``reference`` (the
    reference's hook and finalize)."""
    import gc

    import torch

    torch.set_num_threads(THREADS)
    from interp_prs.decompose import PRSDecomposer
    from interp_prs.naive import naive_per_patch_heads

    cfg = SIZES[size]
    x = torch.randn(1, 3, cfg["image_size"], cfg["image_size"])
    if mode == "reference":
        model, logger = _reference_model(size)
        with torch.no_grad():  # warm up on the same path, then clear what it logged
            logger.finalize(model.encode_image(x, attn_method="head", normalize=False))
        logger.reinit()
    else:
        bb = _backbone(size)
        dec = PRSDecomposer(bb, per_patch=True)
        _ = dec.folded  # weights folding is set-up, not per-image work
        with torch.no_grad():  # warm up on the measured path itself (kernels, buffers)
            if mode == "naive":
                naive_per_patch_heads(dec.stream, x)
            else:
                dec.decompose(x)
    gc.collect()
    _trim()  # hand freed pages back, so the peak counts everything the call itself needs
    exact = _reset_peak()
    before = _status_kb("VmRSS") * 1024
    import resource

    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with torch.no_grad():
        if mode == "naive":
            out = naive_per_patch_heads(dec.stream, x)
        elif mode == "reference":
            rep = model.encode_image(x, attn_method="head", normalize=False)
            out, _mlps = logger.finalize(rep)
        else:
            out = dec.decompose(x).heads
    wall = time.perf_counter() - t0
    peak = (_status_kb("VmHWM") * 1024) if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = before if exact else ru_before
    return {"peak_extra": max(0, peak - base), "exact_reset": exact, "wall": wall,
            "output_bytes": out.numel() * out.element_size(), "shape": list(out.shape)}


def measure_speed(batch: int = 4, repeat: int = 3) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from interp_prs.decompose import PRSDecomposer

    bb = _backbone()
    x = torch.randn(batch, 3, CFG["image_size"], CFG["image_size"])
    dec = PRSDecomposer(bb)
    dec_pp = PRSDecomposer(bb, per_patch=True)
    _ = dec.folded, dec_pp.folded

    fns = {"encode": lambda: bb.encode_image(x, batch_size=batch),
           "per_head": lambda: dec.decompose(x, batch_size=batch),
           "per_patch": lambda: dec_pp.decompose(x, batch_size=batch)}
    times = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():  # warm-up
            f()
        for _ in range(repeat):  # interleaved, so load changes hit every variant alike
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    enc, heads, patches = (min(times[k]) / batch for k in ("encode", "per_head", "per_patch"))
    return {"encode": enc, "per_head": heads, "per_patch": patches, "batch": batch}


def main() -> str:
    from common import fmt_bytes, md_table, run_isolated

    env = {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    head = ("## PRS decomposition (issue 7)\n\n"
            "ViT-B/16-sized open_clip image tower (224 px, 197 tokens, 12 layers x 12 heads, width 768, "
            f"output 512), random weights, CPU, {THREADS} threads.\n\n")
    parts = [head]
    try:
        ours = run_isolated("bench_prs:measure_memory", "ours", env=env, timeout=500)["result"]
        naive = run_isolated("bench_prs:measure_memory", "naive", env=env, timeout=500)["result"]
        ratio = naive["peak_extra"] / max(ours["peak_extra"], 1)
        how = ("peak RSS reset before the call" if ours["exact_reset"]
               else "ru_maxrss difference (upper bound)")
        rows = [
            ["naive (full T x T x heads x width per layer)", fmt_bytes(naive["peak_extra"]),
             f"{naive['wall']:.2f} s"],
            ["interpcore prs (class-token rows, folded)", fmt_bytes(ours["peak_extra"]),
             f"{ours['wall']:.2f} s"],
        ]
        parts.append(
            f"### Peak memory of the per-patch decomposition of one image ({how})\n\n"
            + md_table(["computation", "peak extra memory", "time"], rows)
            + f"\nRatio naive / interpcore: **{ratio:.1f}x** (target >= 20x: "
            f"{'met' if ratio >= 20 else 'NOT met'}). The per-patch output itself "
            f"({ours['shape']}, float32) is {fmt_bytes(ours['output_bytes'])}.\n\n")
    except Exception as exc:  # noqa: BLE001 - report, never invent a figure
        parts.append(f"### Peak memory\n\nnot measured: {str(exc).splitlines()[0][:300]}\n\n")
    parts.append(_reference_section(env))
    try:
        speed = run_isolated("bench_prs:measure_speed", env=env, timeout=900)["result"]
        rows = [
            ["plain encode_image", f"{1000 * speed['encode']:.1f} ms", "1.00x"],
            ["prs, per head", f"{1000 * speed['per_head']:.1f} ms",
             f"{speed['per_head'] / speed['encode']:.2f}x"],
            ["prs, per head and patch", f"{1000 * speed['per_patch']:.1f} ms",
             f"{speed['per_patch'] / speed['encode']:.2f}x"],
        ]
        worst = max(speed["per_head"], speed["per_patch"]) / speed["encode"]
        parts.append(
            f"### Time per image (batch of {speed['batch']}, best of 3, interleaved)\n\n"
            + md_table(["computation", "time per image", "vs encode_image"], rows)
            + f"\nTarget <= 3x encode_image: {'met' if worst <= 3 else 'NOT met'} "
            f"(worst mode {worst:.2f}x).\n")
    except Exception as exc:  # noqa: BLE001
        parts.append(f"### Time per image\n\nnot measured: {str(exc).splitlines()[0][:300]}\n")
    return "".join(parts)


def _reference_section(env) -> str:
    """Peak memory against the reference's own per-patch path, for ViT-B/32 and ViT-B/16."""
    from common import fmt_bytes, md_table, run_isolated

    rows, notes = [], []
    for size in SIZES:
        try:
            ours = run_isolated("bench_prs:measure_memory", "ours", size, env=env, timeout=500)["result"]
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{size}: interpcore not measured: {str(exc).splitlines()[0][:200]}")
            continue
        try:
            ref = run_isolated("bench_prs:measure_memory", "reference", size, env=env,
                               timeout=500)["result"]
        except Exception as exc:  # noqa: BLE001 - say why, never invent a figure
            msg = str(exc).strip().splitlines()
            rows.append([size, "not measured", fmt_bytes(ours["peak_extra"]), "-"])
            notes.append(f"{size}: reference not measured: {(msg[-1] if msg else 'failed')[:200]}")
            continue
        ratio = ref["peak_extra"] / max(ours["peak_extra"], 1)
        rows.append([size, fmt_bytes(ref["peak_extra"]), fmt_bytes(ours["peak_extra"]), f"{ratio:.1f}x"])
    text = ("### Peak memory against the reference's own code (one image, per patch)\n\n"
            "The reference: `prs_hook.py` of clip_text_span on its own open_clip copy "
            "(`attn_method=\"head\"`, then `finalize`), same sizes, random weights; "
            f"measured when `{REFERENCE_ENV}` names a checkout.\n\n")
    if rows:
        text += md_table(["model", "reference", "interpcore prs", "reference / interpcore"], rows)
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text + "\n"


if __name__ == "__main__":
    print(main())
