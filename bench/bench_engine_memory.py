"""The job driver's peak memory as the dataset grows: a 2,000 and a 20,000-image job, on the
local engine and (when Ray is installed) on the Ray engine with 2 workers.

Workers write their shards where the job's output lives and return only a record, so the
driver's memory should not depend on the number of images. Each job runs in a fresh process
(``common.run_isolated``) and reports two figures for that process, the driver: the peak of
Python/numpy allocations during ``run_job`` (tracemalloc) and the growth of its maximum
resident set size during the call (``ru_maxrss``, so torch's own allocations count too).
With the local engine the driver is also the worker (one shard's arrays are in memory at a
time); with Ray the arrays stay in the worker processes.

The job is synthetic and defined here (a tiny image encoder with 256-d embeddings over
random 16x16 images, registered as a plugin in every worker through ``JobSpec.plugins``), so
the output grows by 1 KiB per image: 20 MB of embeddings for 20,000 images. ``python
bench/bench_engine_memory.py`` prints the section.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

TIME_LIMIT = 600  # seconds; read by bench/run
SIZES = (2_000, 20_000)
EMBED = 256

sys.path.insert(0, str(Path(__file__).resolve().parent))

import interpcore  # noqa: E402


def _load(model, *, pretrained=None, device="auto", dtype=None, **options):
    import torch
    from torchvision import transforms

    from interpcore.torch_backbone import TorchBackbone

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(3 * 16 * 16, EMBED)

        def forward(self, x):
            return self.fc(x.flatten(1))

    class TinyBackbone(TorchBackbone):
        def _encode_image(self, pixels):
            return self.model(pixels)

    tf = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
    return TinyBackbone(f"benchmem:{model}", Tiny(), device=device, transform=tf,
                        embed_dim=EMBED, capabilities=[interpcore.Capability.IMAGE_ENCODER])


class RandomImages(interpcore.Dataset):
    name = "benchmem"

    def __init__(self, split="test", n=2000):
        self.n, self.split = int(n), split

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import numpy as np
        from PIL import Image

        arr = np.random.default_rng(i).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        return {"image": Image.fromarray(arr), "label": i % 10}


@interpcore.hookimpl
def register_backbones(register):
    register("benchmem", _load, list_models=lambda: ["tiny"], description="bench model")


@interpcore.hookimpl
def register_datasets(register):
    register("benchmem", RandomImages, description="bench images")


def measure(engine: str, n: int, out: str) -> dict:
    """One job in this process; run through ``common.run_isolated`` (a fresh process)."""
    import resource
    import tracemalloc

    from interpcore.engine import JobSpec, run_job

    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    spec = JobSpec(dataset="benchmem", backbone="benchmem:tiny", dataset_options={"n": n},
                   plugins=("bench_engine_memory",), batch_size=128, shard_size=256)
    kw = {}
    if engine == "ray":
        from interpcore.engine import ray as engine_ray

        engine_ray.start_local_cluster(num_cpus=2)
        kw = {"num_workers": 2}
    # a first small job imports and builds everything once, so the figures are the job's own
    warm = JobSpec(**{**spec.to_dict(), "dataset_options": {"n": 256}})
    run_job(warm, f"{out}-warmup", engine=engine, progress=False, **kw)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    res = run_job(spec, out, engine=engine, progress=False, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out_bytes = sum(p.stat().st_size for p in Path(out).rglob("*.npy"))
    return {"traced_peak": peak, "rss_growth": rss1 - rss0, "seconds": res.seconds,
            "shards": res.num_shards, "output_bytes": out_bytes}


def main() -> str:
    from common import fmt_bytes, md_table, run_isolated

    try:
        import ray  # noqa: F401
        engines = ["local", "ray"]
    except ImportError:
        engines = ["local"]
    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-mem-"))
    rows = []
    try:
        for eng in engines:
            for n in SIZES:
                r = run_isolated("bench_engine_memory:measure", eng, n, str(tmp / f"{eng}-{n}"),
                                 timeout=TIME_LIMIT, env={"INTERP_QUIET": "1"})["result"]
                rows.append([eng + (" (2 workers)" if eng == "ray" else ""), f"{n:,}", r["shards"],
                             fmt_bytes(r["output_bytes"]), fmt_bytes(r["traced_peak"]),
                             fmt_bytes(r["rss_growth"]), f"{r['seconds']:.1f}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = "" if "ray" in engines else "\n\nRay is not installed: only the local engine ran.\n"
    return ("## Job driver memory: 2,000 vs 20,000 images\n\n"
            f"Embeddings ({EMBED}-d float32) of random 16x16 images, shards of 256, batch 128; "
            "each job in a fresh process, after a 256-image warm-up job there (imports, model, workers). *Traced peak*: Python/numpy allocations of the "
            "driver during `run_job` (tracemalloc); *RSS growth*: growth of the driver's "
            "maximum resident set size during the call.\n\n"
            + md_table(["engine", "images", "shards", "output .npy", "traced peak",
                        "RSS growth", "seconds"], rows) + note + "\n")


if __name__ == "__main__":
    print(main())
