"""Ray Data against the engine's task/actor Ray engine, on the same job.

The job: image embeddings of the shapes world (``shapes:clip-vit`` over ``shapes`` images,
1,024 images, shards of 256, batch 64, labels stored), run through ``run_job`` twice over:

* ``ray`` -- the engine's own Ray engine (reader actors feeding model actors,
  ``interpcore/engine/ray.py``);
* ``raydata`` -- the same shards as a Ray Data streaming pipeline, registered as an engine
  plugin below: ``from_items(shards)`` -> ``map`` (read a shard's images, a task per block)
  -> ``map_batches`` on an actor pool (``ActorPoolStrategy``; a class holding the model) that
  computes the shard and writes its files from the actor (one block = one shard) -> the
  driver iterates the records and records them. Both write the same job folder (checked:
  identical arrays), so resume and the manifest are the runner's on both.

On one local Ray cluster (127.0.0.1, ``num_cpus=2``) the two engines run interleaved with 1
and 2 workers, in rounds of four runs (alternating order), up to ``REPEATS`` rounds, and no new
round that would not end within 85% of the time limit (at least one round); every run starts
fresh workers (the engine's actor pool is dropped between runs, as Ray Data's is), so the wall
time includes starting the workers and loading the model. Reported: throughput = images / wall time of
``run_job`` (median over the runs), the driver's traced peak (tracemalloc, on in every run of
both engines) and peak RSS growth (sampled every 10 ms) during the job, and the lines of
scheduling code. Each run's *first shard* time (start to the first shard record written:
workers started, model loaded, one shard computed) is listed too, and the throughput *after
start-up* (from the records' file times: the images written after every worker had written
its first shard, over the time from then to the last). One 256-image warm-up job per engine
runs first, unmeasured (imports, first calls).
``python bench/bench_raydata.py`` prints the section.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import interpcore

TIME_LIMIT = 420  # seconds; read by bench/run
IMAGES = 1024
SHARD = 256
REPEATS = int(os.environ.get("INTERP_BENCH_RAYDATA_REPEATS", "3"))


# -- the Ray Data pipeline, as an engine plugin --------------------------------------------

def _read_shard(row: dict, spec_dict: dict) -> dict:
    """Ray Data ``map``: a shard's images (one array) and fields, read in a task."""
    import numpy as np

    from interpcore.engine import JobSpec, read_samples

    images, fields = read_samples(JobSpec.from_dict(spec_dict), int(row["start"]), int(row["stop"]))
    return {**row, "images": np.stack(images), **{f"field.{k}": v for k, v in fields.items()}}


class _ShardModel:
    """Ray Data ``map_batches`` class: one model per actor; computes and writes a shard."""

    def __init__(self, spec_dict: dict, writer, threads: int):
        from interpcore.engine import JobSpec, ShardWorker

        self.worker = ShardWorker(JobSpec.from_dict(spec_dict), device="cpu", threads=threads)
        self.worker._setup()
        self.writer = writer

    def __call__(self, batch: dict) -> dict:
        from interpcore.engine import Shard

        records = []
        for j, sid in enumerate(batch["id"]):
            shard = Shard(int(sid), int(batch["start"][j]), int(batch["stop"][j]))
            fields = {k[len("field."):]: v[j] for k, v in batch.items() if k.startswith("field.")}
            record = self.worker.write_shard(shard, self.writer, samples=(batch["images"][j], fields),
                                             engine="raydata", worker=f"pid{os.getpid()}")
            records.append(json.dumps(record))
        return {"id": batch["id"], "record": records}


class RayDataEngine:
    """The job's pending shards through a Ray Data pipeline on the connected cluster."""

    name = "raydata"

    def __init__(self, num_workers: int = 1, cpus_per_worker: float = 1.0, **_ignored):
        self.workers, self.cpus = int(num_workers), float(cpus_per_worker)

    def run(self, spec, shards, writer, sink) -> None:
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = ctx.print_on_execution_start = False
        by_id = {s.id: s for s in shards}
        spec_dict = spec.to_dict()
        items = [{"id": s.id, "start": s.start, "stop": s.stop} for s in shards]
        ds = (ray.data.from_items(items, override_num_blocks=len(items))
              .map(_read_shard, fn_kwargs={"spec_dict": spec_dict}, num_cpus=0)
              .map_batches(_ShardModel, fn_constructor_args=(spec_dict, writer, int(self.cpus)),
                           batch_size=1, num_cpus=self.cpus,
                           compute=ray.data.ActorPoolStrategy(size=self.workers)))
        for row in ds.iter_rows():
            sink(by_id[int(row["id"])], json.loads(row["record"]))


@interpcore.hookimpl
def register_engines(register):
    register("raydata", RayDataEngine, description="shards through a Ray Data pipeline (bench)")


# -- measuring -------------------------------------------------------------------------

class _RssPeak:
    """The largest resident set size of this process while the block runs (sampled)."""

    def __enter__(self):
        from common import current_rss_bytes

        self._rss, self.base, self.peak = current_rss_bytes, current_rss_bytes(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = max(0, self.peak - self.base)


def _drop_engine_pool(ray) -> None:
    """Kill the task/actor engine's kept actors, so its next run starts workers as Ray Data's does."""
    from interpcore.engine import ray as engine_ray

    for pool in engine_ray._pools.values():
        for pair in pool:
            for actor in pair:
                ray.kill(actor)
    engine_ray._pools.clear()


def _after_start_up(out: Path) -> tuple[float, float]:
    """From a finished job's shard records (their files' times): when the first shard was
    written, and the images per second after every worker had written its first shard."""
    recs = sorted((f.stat().st_mtime, json.loads(f.read_text())) for f in (out / "records").glob("*.json"))
    first_of: dict = {}
    for t, rec in recs:
        first_of.setdefault(rec.get("worker"), t)
    ready = max(first_of.values())
    later = [(t, rec) for t, rec in recs if t > ready]
    span = recs[-1][0] - ready
    images = sum(rec["stop"] - rec["start"] for _, rec in later)
    return recs[0][0], (images / span if later and span > 0 else float("nan"))


def _ratio(figures: dict, workers: int) -> float:
    """Task/actor over Ray Data, medians, for one number of workers."""
    return (statistics.median(figures[("ray", workers)])
            / statistics.median(figures[("raydata", workers)]))


def _code_lines(*objs) -> int:
    """Lines of source, without blank lines, comments and docstrings."""
    import ast
    import textwrap

    total = 0
    for obj in objs:
        src = textwrap.dedent(inspect.getsource(obj))
        docs = set()
        for node in ast.walk(ast.parse(src)):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(getattr(body[0], "value", None), ast.Constant)
                    and isinstance(body[0].value.value, str)):
                docs.update(range(body[0].lineno, body[0].end_lineno + 1))
        total += sum(1 for n, ln in enumerate(src.splitlines(), 1)
                     if ln.strip() and not ln.strip().startswith("#") and n not in docs)
    return total


def main(images: int = IMAGES, shard_size: int = SHARD, repeats: int = REPEATS) -> str:
    try:
        import ray
    except ImportError:
        return ("## Ray Data vs the task/actor Ray engine\n\nSkipped: Ray is not installed "
                "(`pip install 'interpcore[ray]'`).\n")
    os.environ.setdefault("INTERP_QUIET", "1")
    import logging
    import tracemalloc

    import numpy as np

    from common import fmt_bytes, md_table, time_limit
    from interpcore.engine import JobSpec, load_array, run_job
    from interpcore.engine import ray as engine_ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per finished pipeline
    reg = interpcore.get_registry()
    import bench_raydata as module  # by name (bench/run loads this file without one)

    reg.register_plugin(module, "bench-raydata")
    # this file is not importable by name in Ray's workers: send the pipeline's code by value
    ray.cloudpickle.register_pickle_by_value(module)
    spec = JobSpec(dataset="shapes", backbone="shapes:clip-vit", dataset_options={"n": images},
                   shard_size=shard_size, batch_size=64, fields=("label",))
    warm = JobSpec(**{**spec.to_dict(), "limit": shard_size})
    tmp = Path(tempfile.mkdtemp(prefix="interp-bench-raydata-"))
    runs: dict[tuple[str, int], list] = {}
    firsts: dict[tuple[str, int], list] = {}
    steadies: dict[tuple[str, int], list] = {}
    load0 = os.getloadavg()[0]
    t_all = time.perf_counter()
    engine_ray.start_local_cluster(num_cpus=2)
    try:
        def once(engine: str, workers: int, out: str, job=spec) -> tuple:
            tracemalloc.start()
            with _RssPeak() as mem:
                t0, started = time.perf_counter(), time.time()
                run_job(job, tmp / out, engine=engine, progress=False, num_workers=workers)
                wall = time.perf_counter() - t0
            traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            first, steady = _after_start_up(tmp / out)
            firsts.setdefault((engine, workers), []).append(first - started)
            steadies.setdefault((engine, workers), []).append(steady)
            if engine == "ray":
                _drop_engine_pool(ray)
            return wall, traced, mem.growth

        for engine in ("ray", "raydata"):  # imports and first-call costs, not measured
            once(engine, 1, f"warm-{engine}", job=warm)
        runs.clear(), firsts.clear(), steadies.clear()
        t_rounds = time.perf_counter()
        for rep in range(repeats):
            used = time.perf_counter() - t_rounds
            if rep and (t_rounds - t_all) + used * (rep + 1) / rep > 0.85 * time_limit():
                break  # the next round would not fit
            for workers in (1, 2):
                order = ("ray", "raydata") if rep % 2 == 0 else ("raydata", "ray")
                for engine in order:
                    runs.setdefault((engine, workers), []).append(
                        once(engine, workers, f"{engine}-{workers}-{rep}"))
        same = all(np.array_equal(load_array(tmp / "ray-2-0", name), load_array(tmp / "raydata-2-0", name))
                   for name in ("embedding", "label"))
    finally:
        _drop_engine_pool(ray)
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t_all
    load1 = os.getloadavg()[0]

    names = {"ray": "task/actor engine (`--engine ray`)", "raydata": "Ray Data pipeline"}
    rows, ips = [], {}
    for (engine, workers), got in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        walls = [w for w, _, _ in got]
        ips[(engine, workers)] = images / statistics.median(walls)
        rows.append([names[engine], workers, f"{ips[(engine, workers)]:.0f}",
                     " / ".join(f"{images / w:.0f}" for w in walls),
                     " / ".join(f"{t:.0f}" for t in firsts[(engine, workers)]),
                     f"{statistics.median(steadies[(engine, workers)]):.0f}",
                     fmt_bytes(statistics.median(t for _, t, _ in got)),
                     fmt_bytes(statistics.median(m for _, _, m in got))])
    code = {"ray": _code_lines(engine_ray.RayEngine.run, engine_ray._ReadActor, engine_ray._ShardActor),
            "raydata": _code_lines(module.RayDataEngine.run, module._read_shard, module._ShardModel)}
    module_lines = sum(1 for ln in Path(engine_ray.__file__).read_text().splitlines() if ln.strip())
    text = [
        "## Ray Data vs the task/actor Ray engine",
        "",
        f"The same job through `run_job`: embeddings of {images:,} `shapes` images "
        f"(`shapes:clip-vit`, shards of {shard_size}, batch 64, labels stored), on a local Ray "
        f"cluster with num_cpus=2 on this {os.cpu_count()}-core machine (load average "
        f"{load0:.1f} at the start, {load1:.1f} at the end; shared with other processes, so the "
        f"figures are noisy). The Ray Data engine is `bench/bench_raydata.py`: `from_items(shards)`"
        " -> `map` (read the shard) -> `map_batches` on `ActorPoolStrategy(size=workers)` (a class "
        "holding the model, which writes the shard's files) -> the driver records each shard. "
        f"Every run starts its workers afresh (model loading included); "
        f"{len(runs[('ray', 1)])} interleaved runs per row, throughput = images / wall time, "
        f"median (each run listed); *traced peak*: the driver's Python/numpy allocations "
        f"during `run_job` (tracemalloc), *RSS growth*: the driver's resident set size, sampled "
        f"every 10 ms. Both engines wrote identical arrays: {'yes' if same else 'NO'}. *First "
        f"shard*: from the start of `run_job` to the first shard's record written (workers started, model loaded, one shard "
        f"computed); *after start-up*: images of the shards written after every worker had "
        f"written its first, over the time from then to the last (from the shard records' file "
        f"times). One 256-image warm-up job per engine ran first (not counted). Total time "
        f"{seconds:.0f} s.",
        "",
        md_table(["engine", "workers", "images/s (median)", "each run (images/s)",
                  "first shard (s, each run)", "images/s after start-up (median)",
                  "driver traced peak (median)", "driver RSS growth (median)"], rows),
        "",
        f"Speed-up of 2 workers over 1: task/actor {ips[('ray', 2)] / ips[('ray', 1)]:.2f}x, Ray "
        f"Data {ips[('raydata', 2)] / ips[('raydata', 1)]:.2f}x. Task/actor over Ray Data: "
        f"{ips[('ray', 1)] / ips[('raydata', 1)]:.2f}x (1 worker), "
        f"{ips[('ray', 2)] / ips[('raydata', 2)]:.2f}x (2 workers); after start-up: "
        + ", ".join(f"{w} worker(s) {_ratio(steadies, w):.2f}x" for w in (1, 2)) + ".",
        "",
        f"Scheduling code (lines without blanks, comments, docstrings): task/actor "
        f"{code['ray']} (`RayEngine.run`, `_ReadActor`, `_ShardActor`; the whole "
        f"`interpcore/engine/ray.py`, cluster connection included, is {module_lines} non-blank "
        f"lines), Ray Data {code['raydata']} (`RayDataEngine.run`, `_read_shard`, `_ShardModel`,"
        " without the engine's resource checks, error unwrapping, cancelling on Ctrl-C and actor "
        "reuse between jobs).",
    ]
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.stdout.write(main())
