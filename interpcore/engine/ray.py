"""The Ray engine: the same shards as the local engine, computed by a pool of Ray actors.

Pipeline per shard::

    reader actor (no CPU reserved)  ->  model actor (one model each, a GPU where the
    reads images [start, stop) as      cluster has one) runs ShardWorker.compute
    uint8 arrays into the object store and writes the shard's files where the job's output
                                       lives (a shared folder or an fsspec URL); only the
                                       shard's record goes back to the driver

Each model actor has its own reader and two shards queued, so the next shard's images are
read while the current one is computed. Readers are long-lived actors rather than tasks, so
no Python process is started (and the dataset is not reopened) per shard. A shard is
written by the actor that computed it and recorded by the driver when its record comes back,
so the driver's memory does not grow with the outputs; if a worker fails, the shards already
written are kept and the job can be resumed by running it again.

Without ``address`` a local cluster is started on 127.0.0.1 only (nothing listens on other
interfaces) and stopped at the end; with ``address`` (``auto``, ``ray://host:10001``,
``host:6379``) an existing cluster is used. If Ray is already initialised in this process
(a notebook, a test fixture), that connection is used and left open.

``ray`` is imported only when a job runs: ``pip install 'interpcore[ray]'``.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import InterpError
from .sources import read_samples
from .spec import EngineError, JobSpec, Shard
from .worker import ShardWorker

#: environment variables forwarded to Ray workers (caches, plugin switches, quiet mode)
FORWARD_ENV_PREFIXES = ("INTERP_", "HF_", "TORCH_HOME", "XDG_CACHE_HOME")


def require_ray():
    try:
        import ray
    except ImportError:
        raise EngineError(
            "the 'ray' engine needs Ray, which is not installed: pip install 'interpcore[ray]'"
        ) from None
    return ray


def _loopback_only(ray) -> None:
    """Make a cluster started by this process use 127.0.0.1 as its node address."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # inherited by raylet / workers
    try:  # the constant is read when ray is imported; ray may already be imported
        import ray._private.ray_constants as rc

        rc.ENABLE_RAY_CLUSTER = False
    except (ImportError, AttributeError):  # pragma: no cover - other Ray versions
        pass


def start_local_cluster(num_cpus: int | None = None, num_gpus: int | None = None, **init_kwargs):
    """Start a Ray cluster in this process bound to 127.0.0.1 (tests, notebooks, laptops)."""
    ray = require_ray()
    _loopback_only(ray)
    kwargs = dict(address="local", num_cpus=num_cpus, include_dashboard=False,
                  log_to_driver=bool(os.environ.get("INTERP_RAY_LOGS")),
                  configure_logging=True, logging_level="warning")
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    kwargs.update(init_kwargs)
    return ray.init(**kwargs)


def _plugin_paths(spec: JobSpec) -> list[str]:
    """Folders to put on the workers' PYTHONPATH so the spec's extra plugins import there."""
    out = []
    for path in list(spec.plugins) + ([spec.adapter] if spec.adapter else []):
        module = path.partition(":")[0]
        try:
            found = importlib.util.find_spec(module.split(".")[0])
        except (ImportError, ValueError):
            found = None
        if found is None or not found.origin or found.origin in ("built-in", "frozen"):
            continue
        origin = Path(found.origin)
        root = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(root) not in out:
            out.append(str(root))
    return out


def _worker_env(spec: JobSpec) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV_PREFIXES)}
    paths = _plugin_paths(spec)
    if paths:
        old = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    return env


class _ReadActor:
    """Reads shards' images (no CPU reserved). Long-lived, so the dataset is opened once and
    no Python process is started per shard."""

    def read(self, spec_dict: dict, start: int, stop: int):
        return read_samples(JobSpec.from_dict(spec_dict), start, stop)


class _ShardActor:
    """One model per actor; computes whole shards. Kept between jobs of one Ray session
    (a notebook, a test session) so the next job with the same model skips the start-up."""

    def __init__(self, device: str, threads: int):
        self.device, self.threads = device, threads
        self.workers: dict[str, ShardWorker] = {}
        self.where = f"{socket.gethostname()}:pid{os.getpid()}"

    def setup(self, spec_dict: dict) -> str:
        spec = JobSpec.from_dict(spec_dict)
        if spec.hash not in self.workers:
            worker = ShardWorker(spec, device=self.device, threads=self.threads)
            worker._setup()  # load the model now, so errors surface before any shard
            self.workers = {spec.hash: worker}  # one model at a time
        return self.where

    def compute(self, spec_hash: str, shard: Shard, payload, writer):
        """Compute a shard and write its files from this actor; only the record goes back."""
        return self.workers[spec_hash].write_shard(shard, writer, samples=payload,
                                                   engine="ray", worker=self.where)


#: actor pools kept for the Ray session this process is connected to (not for clusters this
#: module started itself, which are stopped after the job)
_pools: dict[tuple, list] = {}


def _address_host(address: str) -> str | None:
    rest = address.split("://", 1)[-1]
    host, sep, _port = rest.rpartition(":")
    return host.strip("[]") if sep else None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (Ray itself retries for minutes) when a host:port address does not answer."""
    if address in ("auto", "local"):
        return
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EngineError(
            f"cannot reach the Ray cluster at {address} ({exc}); start one with 'ray start "
            "--head' there, or leave out --address for a local cluster"
        ) from None


def _unwrap(ray, exc: BaseException) -> BaseException:
    """The worker's own error where there is one (an InterpError keeps its message)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, InterpError):
        return cause
    if isinstance(exc, ray.exceptions.RayActorError):
        return EngineError(f"a Ray worker died: {exc}")
    if cause is not None:
        return EngineError(f"a Ray worker failed: {type(cause).__name__}: {cause}")
    return EngineError(f"a Ray worker failed: {exc}")


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - best effort clean-up of an actor that may be gone
        pass


class RayEngine:
    """Shards on a Ray cluster: reader actors feeding a pool of model actors."""

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int | None = None,
                 num_cpus: int | None = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float | None = None, queue_per_worker: int = 2,
                 device: str | None = None, **_ignored):
        require_ray()  # fail before the output folder is touched
        if num_workers is not None and num_workers < 1:
            raise EngineError(f"num_workers must be >= 1, got {num_workers}")
        if cpus_per_worker <= 0:
            raise EngineError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
        self.address = address
        self.num_workers = num_workers
        self.num_cpus = num_cpus
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.queue_per_worker = max(1, int(queue_per_worker))
        self.device = None if device in (None, "auto") else device
        self.workers = num_workers or 1
        self.setup_seconds = 0.0

    def _connect(self, ray) -> bool:
        """Connect or start; True when this call started (and must stop) the cluster."""
        if ray.is_initialized():
            return False
        if self.address:
            _check_reachable(self.address)
            host = _address_host(self.address)
            if host in ("127.0.0.1", "localhost", "::1"):
                _loopback_only(ray)  # else ray swaps 127.0.0.1 for this machine's address
            try:  # clusters started with token auth: use this user's token (~/.ray/auth_token)
                from ray._private.authentication.authentication_token_setup import (
                    maybe_enable_token_auth_if_token_available,
                )

                maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
            except Exception:  # noqa: BLE001 - other Ray versions: RAY_AUTH_MODE as the user set it
                pass
            try:
                ray.init(address=self.address, log_to_driver=bool(os.environ.get("INTERP_RAY_LOGS")),
                         logging_level="warning")
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EngineError(f"cannot connect to the Ray cluster at {self.address}: {exc}") from None
            return True
        start_local_cluster(num_cpus=self.num_cpus)
        return True

    def run(self, spec: JobSpec, shards: list[Shard], writer, sink) -> None:
        ray = require_ray()
        if writer.location.protocol == "memory":
            raise EngineError("a memory:// job folder lives in one process; Ray workers cannot "
                              "write to it: use a folder or a shared URL (s3://, gs://, ...)")
        t_start = time.perf_counter()
        started = self._connect(ray)
        owned: list = []
        inflight: dict = {}  # compute ref -> (shard, worker index)
        try:
            resources = ray.cluster_resources()
            gpus = float(resources.get("GPU", 0))
            cpus = float(resources.get("CPU", 1))
            gpw = self.gpus_per_worker
            if gpw is None:
                gpw = 1.0 if gpus >= 1 else 0.0
            if self.num_workers:
                n = self.num_workers
            elif gpw > 0:
                n = max(1, int(gpus // gpw))
            else:
                n = max(1, int(cpus // self.cpus_per_worker))
            n = min(n, len(shards)) or 1
            if gpw > 0 and n > 1 and gpus and n * gpw > gpus:
                gpw = gpus / n  # share the GPUs rather than wait forever for a free one
            fit = int(cpus // self.cpus_per_worker + 1e-9)
            if fit < 1:
                raise EngineError(f"the Ray cluster has {cpus:g} CPUs; a worker needs "
                                  f"{self.cpus_per_worker:g} (cpus_per_worker)")
            if n > fit:  # more actors than fit would wait for resources forever
                print(f"interp: the Ray cluster fits {fit} worker(s) of {self.cpus_per_worker:g} "
                      f"CPU; using {fit} instead of {n}", file=sys.stderr)
                n = fit
            self.workers = n
            device = self.device or ("cuda" if gpw > 0 else "cpu")
            threads = max(1, int(self.cpus_per_worker))
            env = _worker_env(spec)
            runtime_env = {"env_vars": env} if env else None
            spec_dict = spec.to_dict()
            session = ray.get_runtime_context().get_job_id()
            key = (session, self.cpus_per_worker, gpw, device, threads,
                   json.dumps(runtime_env, sort_keys=True))
            if not started and key not in _pools:  # one pool at a time: free the CPUs
                for stale in _pools.values():
                    for pair in stale:
                        for a in pair:
                            _kill(ray, a)
                _pools.clear()
            pool = [] if started else _pools.setdefault(key, [])
            actor_opts = dict(num_cpus=self.cpus_per_worker, num_gpus=gpw, max_restarts=0)
            read_opts = dict(num_cpus=0, max_restarts=0)
            if runtime_env:
                actor_opts["runtime_env"] = read_opts["runtime_env"] = runtime_env
            actor_cls = ray.remote(_ShardActor).options(**actor_opts)
            reader_cls = ray.remote(_ReadActor).options(**read_opts)
            # the pool holds (model actor, reader actor) pairs
            while len(pool) < n:
                pool.append((actor_cls.remote(device, threads), reader_cls.remote()))
            actors = [m for m, _ in pool[:n]]
            readers = [r for _, r in pool[:n]]
            owned = [a for pair in pool[:n] for a in pair] if started else []
            try:
                ray.get([a.setup.remote(spec_dict) for a in actors])
            except ray.exceptions.RayError as exc:
                _pools.pop(key, None)
                owned = [a for pair in pool for a in pair]
                raise _unwrap(ray, exc) from None
            self.setup_seconds = time.perf_counter() - t_start

            queue = collections.deque(shards)
            writer_ref = ray.put(writer)

            def submit(ai: int) -> None:
                shard = queue.popleft()
                payload = readers[ai].read.remote(spec_dict, shard.start, shard.stop)
                inflight[actors[ai].compute.remote(spec.hash, shard, payload, writer_ref)] = (shard, ai)

            for _ in range(self.queue_per_worker):
                for ai in range(n):
                    if queue:
                        submit(ai)
            error = None
            while inflight:
                done, _ = ray.wait(list(inflight), num_returns=1)
                shard, ai = inflight.pop(done[0])
                try:
                    record = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    if isinstance(exc, ray.exceptions.RayActorError):
                        _pools.pop(key, None)  # a dead actor: start afresh next time
                        owned = [a for pair in pool for a in pair]
                    if error is None:
                        error = _unwrap(ray, exc)
                        queue.clear()  # stop feeding; keep the shards still coming back
                    continue
                sink(shard, record)
                if queue and error is None:
                    submit(ai)
            if error is not None:
                raise error
        finally:
            for ref in inflight:  # interrupted (Ctrl-C, an error): drop the queued shards
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort clean-up
                    pass
            for a in owned:
                _kill(ray, a)
            if started:
                ray.shutdown()
