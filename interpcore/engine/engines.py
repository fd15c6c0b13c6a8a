"""Engines (where shards are computed) and :func:`run_job`, the driver that hands pending
shards to an engine and records what comes back."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from .sources import num_samples
from .spec import EngineError, JobSpec, Shard, make_shards
from .store import JobResult, JobStore, ShardWriter
from .worker import ShardWorker

#: the engines interpcore registers itself; plugins add more (``register_engines``)
ENGINES = ("local", "ray")


class LocalEngine:
    """Everything in this process: the single-process reference path. ``backbone`` /
    ``method``: a command's own model objects, reused by the worker (see :class:`ShardWorker`)."""

    name = "local"

    def __init__(self, device: str = "auto", backbone=None, method=None, **_ignored):
        """``backbone`` / ``method``: objects of this process to use instead of building them
        from the spec's names (an API call that holds them already)."""
        self.device = device
        self.objects = {"backbone": backbone, "method": method}
        self.workers = 1
        self.setup_seconds = 0.0

    def run(self, spec: JobSpec, shards: list[Shard], writer: ShardWriter, sink: Callable) -> None:
        t0 = time.perf_counter()
        worker = ShardWorker(spec, device=self.device, **self.objects)
        worker._setup()
        self.setup_seconds = time.perf_counter() - t0
        for shard in shards:
            sink(shard, worker.write_shard(shard, writer, engine="local",
                                           worker=f"pid{os.getpid()}"))


def _ray_engine(**options):
    from .ray import RayEngine

    return RayEngine(**options)


def register_core_engines(register) -> None:
    """The engines interpcore registers itself (called by the registry before any plugin's
    ``register_engines`` hook, so the names stay the core's)."""
    register("local", LocalEngine, description="every shard in this process")
    register("ray", _ray_engine, description="shards on a Ray cluster, one model per actor "
             "(pip install 'interpcore[ray]')")


def engine_names() -> list[str]:
    from ..registry import get_registry

    return get_registry().names("engine")


def get_engine(name: str, **options):
    """The engine registered as ``name``, built with ``options`` (an unknown name raises an
    :class:`~interpcore.InterpError` with the closest registered names)."""
    from ..registry import get_registry

    entry = get_registry().entry("engine", name)
    return entry.factory(**options)


def _check_names(spec: JobSpec) -> None:
    """The backbone family and the method must be registered (cheap, no model is loaded)."""
    from ..registry import get_registry

    if spec.plugins:  # plugins named for the workers may register the names; they decide
        return
    reg = get_registry()
    if isinstance(spec.backbone, str) and ":" in spec.backbone:
        reg.entry("backbone", spec.backbone.partition(":")[0])
    if spec.method:
        reg.entry(spec.kind, spec.method)


def run_job(spec: JobSpec | Mapping, out_dir, *, engine: str = "local", overwrite: bool = False,
            verify: bool = True, progress: bool = True, **engine_options) -> JobResult:
    """Run (or resume) a job into ``out_dir`` (a local folder or an fsspec URL such as
    ``s3://bucket/run``) and return what it produced. Workers write the shards' files there
    themselves; this process only records them in the manifest.

    ``engine_options`` go to the engine: ``device`` for ``local``; ``address``,
    ``num_workers``, ``num_cpus``, ``cpus_per_worker``, ``gpus_per_worker`` for ``ray``.
    """
    spec = spec if isinstance(spec, JobSpec) else JobSpec.from_dict(spec)
    eng = get_engine(engine, **engine_options)
    n = num_samples(spec)
    if n == 0:
        raise EngineError(f"dataset '{spec.dataset}' has no samples to process")
    shards = make_shards(n, spec.shard_size)
    if engine_options.get("backbone") is None:  # objects given: nothing is built by name
        _check_names(spec)  # before the job folder is made: a typo leaves nothing behind
    store = JobStore(out_dir, spec, shards, n)
    pending = store.open(overwrite=overwrite, verify=verify)
    pending_ids = {s.id for s in pending}
    skipped = [s.id for s in shards if s.id not in pending_ids]
    computed: list[int] = []

    bar = None
    if progress:
        from ..progress import progress as _progress

        bar = _progress(total=sum(s.size for s in pending), desc=f"{spec.method or 'embed'} [{engine}]",
                        unit="img")

    def sink(shard: Shard, record: Mapping):
        """In the driver: a shard a worker has written. Only its record is kept here."""
        store.record(shard, record)
        computed.append(shard.id)
        if bar is not None:
            bar.update(shard.size)

    t0 = time.perf_counter()
    try:
        if pending:
            eng.run(spec, pending, store.writer(), sink)
    except BaseException:
        store.write_manifest("interrupted", force=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    missing = [s.id for s in shards if s.id not in store.records]
    if missing:
        store.write_manifest("interrupted", force=True)
        raise EngineError(f"{len(missing)} shard(s) were not computed ({missing[:5]}...); rerun to resume")
    means = store.means()
    n_computed = sum(s.size for s in shards if s.id in set(computed))
    setup = float(getattr(eng, "setup_seconds", 0.0) or 0.0)
    busy = seconds - setup
    result = JobResult(
        out_dir=str(store.root), spec_hash=spec.hash, engine=engine, num_samples=n,
        num_shards=len(shards), computed=sorted(computed), skipped=skipped,
        arrays=store.array_names(), means=means, seconds=round(seconds, 3),
        images_per_second=round(n_computed / busy, 2) if busy > 0 and n_computed else 0.0,
        workers=getattr(eng, "workers", 1), setup_seconds=round(setup, 3),
    )
    store.write_manifest("complete", force=True, extra={
        "means": means, "arrays": result.arrays, "last_run": {
            "engine": engine, "computed": result.computed, "skipped": skipped,
            "seconds": result.seconds, "setup_seconds": result.setup_seconds,
            "images_per_second": result.images_per_second, "workers": result.workers}})
    return result


