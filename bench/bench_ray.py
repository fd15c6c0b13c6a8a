"""Throughput of dataset jobs: the local engine vs the Ray engine with 1 and 2 workers.

The job: a ViT CLIP image tower (shapes:clip-vit when its weights exist, else a random
open_clip ViT saved to a checkpoint so every worker loads the same weights) decomposed with
PRS (or plain embeddings when the prs plugin is missing) over synthetic images written to an
image folder (``folder:`` source), so the benchmark needs no dataset plugin.

Reported per engine: the cold wall time (cluster already up, workers start and load the
model) and the warm throughput (a second job on the same workers). ``main()`` returns a
markdown section; run directly to print it: ``python bench/bench_ray.py [--images N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

TIME_LIMIT = 420  # seconds; read by bench/run

BENCH_CLIP = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 6,
                   "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4,
                 "layers": 1},
}


def _images(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:05d}.png")


def _backbone(tmp: Path) -> tuple[str, dict]:
    import interpcore

    weights = Path(__file__).parents[1] / "backbones" / "interp_shapes_models" / "weights"
    reg = interpcore.get_registry()
    if "shapes" in reg.names("backbone") and any(weights.glob("*clip*")):
        return "shapes:clip-vit", {}
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**BENCH_CLIP)
    path = tmp / "bench_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return "open_clip:bench-vit", {"pretrained": str(path), "model_config": BENCH_CLIP}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(images: int = 512, shard_size: int = 64) -> str:
    try:
        import ray  # noqa: F401
    except ImportError:
        return ("## Ray engine throughput\n\nSkipped: Ray is not installed "
                "(`pip install 'interpcore[ray]'`).\n")
    os.environ.setdefault("INTERP_QUIET", "1")
    import interpcore
    from interpcore import engine_ray
    from interpcore.engine import JobSpec, run_job

    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-ray-"))
    try:
        _images(tmp / "images", images)
        backbone, bopts = _backbone(tmp)
        method = "prs" if "prs" in interpcore.get_registry().names("decomposer") else None
        spec = JobSpec(dataset=f"folder:{tmp / 'images'}", backbone=backbone,
                       backbone_options=bopts, method=method,
                       call_options={"normalize": True} if method else {},
                       shard_size=shard_size, batch_size=32, fields=())
        warm_spec = JobSpec(**{**spec.to_dict(), "limit": images - 1})  # same model, new job
        rows = []

        import torch

        torch.set_num_threads(1)  # like one Ray worker with num_cpus=1
        _, cold = _timed(lambda: run_job(spec, tmp / "local", progress=False))
        res, _ = _timed(lambda: run_job(warm_spec, tmp / "local-warm", progress=False))
        rows.append(("local (1 process, 1 thread)", cold, res.images_per_second))

        _, start = _timed(lambda: engine_ray.start_local_cluster(num_cpus=2))
        try:
            for workers in (1, 2):
                _, cold = _timed(lambda: run_job(spec, tmp / f"ray{workers}", engine="ray",
                                                 num_workers=workers, progress=False))
                res, _ = _timed(lambda: run_job(warm_spec, tmp / f"ray{workers}-warm",
                                                engine="ray", num_workers=workers,
                                                progress=False))
                rows.append((f"ray, {workers} worker(s)", cold, res.images_per_second))
        finally:
            engine_ray._pools.clear()
            ray.shutdown()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        lines = [
            "## Ray engine throughput",
            "",
            f"{images} synthetic 64x64 images, shards of {shard_size}, batch 32, backbone "
            f"`{backbone}`, method `{method or 'embeddings'}`, on this machine "
            f"({os.cpu_count()} CPU cores, load average {load:.1f} at the end). Local Ray "
            f"cluster on 127.0.0.1 with num_cpus=2, started in {start:.1f} s (not counted "
            "below). *Cold*: first job, workers start and load the model. *Warm*: a second "
            "job on the same workers.",
            "",
            "| engine | cold job (s) | warm throughput (images/s) |",
            "|---|---|---|",
        ]
        for name, cold_s, ips in rows:
            lines.append(f"| {name} | {cold_s:.1f} | {ips:.1f} |")
        base = rows[1][2]
        if base:
            lines += ["", f"Speed-up of 2 Ray workers over 1: {rows[2][2] / base:.2f}x "
                          "(at most 2x on 2 cores; less when other processes share them)."]
        return "\n".join(lines) + "\n"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=64)
    a = ap.parse_args()
    sys.stdout.write(main(a.images, a.shard_size))
