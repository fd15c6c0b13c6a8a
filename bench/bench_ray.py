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
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 384, "layers": 8,
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


def _shard_seconds(out: Path) -> float:
    import json

    secs = [json.loads(p.read_text())["seconds"] for p in (out / "records").glob("*.json")]
    return sum(secs) / len(secs) if secs else float("nan")


def main(images: int = 512, shard_size: int = 32) -> str:
    try:
        import ray  # noqa: F401
    except ImportError:
        return ("## Ray engine throughput\n\nSkipped: Ray is not installed "
                "(`pip install 'interpcore[ray]'`).\n")
    os.environ.setdefault("INTERP_QUIET", "1")
    import interpcore
    from interpcore.engine import ray as engine_ray
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
        # a second job on the same model (another spec hash): runs on already started workers
        warm_spec = JobSpec(**{**spec.to_dict(), "limit": images - 1})
        rows = []
        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

        def measure(name, out, **kw):
            cold = run_job(spec, tmp / out, progress=False, **kw)
            warm = run_job(warm_spec, tmp / f"{out}-warm", progress=False, **kw)
            rows.append((name, cold.seconds, cold.setup_seconds, warm.images_per_second,
                         _shard_seconds(tmp / f"{out}-warm")))

        import torch

        torch.set_num_threads(1)  # like one Ray worker with num_cpus=1
        measure("local (this process, 1 thread)", "local")
        _, start = _timed(lambda: engine_ray.start_local_cluster(num_cpus=2))
        try:
            for workers in (1, 2):
                measure(f"ray, {workers} worker(s)", f"ray{workers}", engine="ray",
                        num_workers=workers)
        finally:
            engine_ray._pools.clear()
            ray.shutdown()
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        lines = [
            "## Ray engine throughput",
            "",
            f"{images} synthetic 64x64 PNG images read from a folder, shards of {shard_size}, "
            f"batch 32, backbone `{backbone}`, method `{method or 'embeddings'}`. This machine: "
            f"{os.cpu_count()} CPU cores shared with other processes (load average {load0:.1f} "
            f"at the start, {load1:.1f} at the end), so the figures are noisy. Local Ray "
            f"cluster on 127.0.0.1 with num_cpus=2, started in {start:.1f} s (not counted "
            "below). *Cold job*: wall time of a first job, including starting the workers and "
            "loading the model (start-up column). *Warm*: a second job on the same workers; "
            "throughput = images / (wall time - model set-up); *per shard* = mean compute "
            "time of one shard inside a worker.",
            "",
            "| engine | cold job (s) | of which start-up (s) | warm throughput (images/s) "
            "| per shard (s) |",
            "|---|---|---|---|---|",
        ]
        for name, cold_s, setup_s, ips, shard_s in rows:
            lines.append(f"| {name} | {cold_s:.1f} | {setup_s:.1f} | {ips:.1f} | {shard_s:.2f} |")
        if rows[1][3]:
            lines += ["", f"Speed-up of 2 Ray workers over 1 (warm): {rows[2][3] / rows[1][3]:.2f}x "
                          "(at most 2x on 2 cores)."]
        return "\n".join(lines) + "\n"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=32)
    a = ap.parse_args()
    sys.stdout.write(main(a.images, a.shard_size))
