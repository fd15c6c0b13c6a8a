"""The output folder of a job: manifest, per-shard arrays and records (:class:`JobStore`),
and the readers of finished job folders (:func:`load_array`, :func:`iter_shards`,
:func:`read_manifest`, :func:`job_result`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..base import Result
from ..cache import atomic_path, file_sha256, write_text
from .spec import FORMAT_VERSION, EngineError, JobSpec, Shard


MANIFEST = "manifest.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _save_npy(path: Path, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def _write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


class JobStore:
    """The output folder of one job: manifest, per-shard arrays and records."""

    def __init__(self, out_dir, spec: JobSpec, shards: list[Shard], num_samples: int):
        self.root = Path(out_dir)
        self.spec, self.shards, self.n = spec, shards, num_samples
        self.run_id = uuid.uuid4().hex[:12]
        self.records: dict[int, dict] = {}
        self._last_manifest = 0.0

    # paths
    def array_path(self, name: str, shard: Shard) -> Path:
        return self.root / "arrays" / name / f"{shard.label}.npy"

    def record_path(self, shard: Shard) -> Path:
        return self.root / "records" / f"{shard.label}.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def open(self, overwrite: bool = False, verify: bool = True) -> list[Shard]:
        """Check the folder belongs to this job; return the shards still to compute."""
        self.root.mkdir(parents=True, exist_ok=True)
        old = None
        if self.manifest_path.exists():
            try:
                old = json.loads(self.manifest_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise EngineError(
                    f"{self.manifest_path} is not a readable job manifest ({exc}); delete it "
                    "or use another output folder"
                ) from None
            if old.get("spec_hash") != self.spec.hash:
                if not overwrite:
                    raise EngineError(
                        f"{self.root} holds the outputs of a different job (spec hash "
                        f"{old.get('spec_hash')}, this job {self.spec.hash}); use another output "
                        "folder or overwrite=True (--overwrite) to replace them"
                    )
                self._clear()
                old = None
        elif any((self.root / d).exists() for d in ("arrays", "records")):
            if not overwrite:
                raise EngineError(
                    f"{self.root} has job outputs but no manifest; use another output folder "
                    "or overwrite=True (--overwrite)"
                )
            self._clear()
        pending = []
        for shard in self.shards:
            rec = self._load_record(shard, verify)
            if rec is None:
                pending.append(shard)
            else:
                self.records[shard.id] = rec
        self.write_manifest("running", force=True)
        return pending

    def _clear(self):
        import shutil

        for d in ("arrays", "records", "means"):
            shutil.rmtree(self.root / d, ignore_errors=True)
        if self.manifest_path.exists():
            self.manifest_path.unlink()

    def _load_record(self, shard: Shard, verify: bool) -> dict | None:
        path = self.record_path(shard)
        if not path.exists():
            return None
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if (rec.get("spec_hash") != self.spec.hash or rec.get("start") != shard.start
                or rec.get("stop") != shard.stop):
            return None
        for name, info in rec.get("arrays", {}).items():
            p = self.array_path(name, shard)
            if not p.exists() or p.stat().st_size != info.get("bytes"):
                return None
            if verify and file_sha256(p) != info.get("sha256"):
                return None
        return rec

    def save_shard(self, shard: Shard, arrays: Mapping, info: Mapping | None = None) -> dict:
        """Write one shard's arrays, then its record (the record marks it done)."""
        for name, arr in arrays.items():
            if arr.shape[0] != shard.size:
                raise EngineError(
                    f"{shard.label}: array '{name}' has {arr.shape[0]} rows for {shard.size} images"
                )
        prev_path = self.record_path(shard)
        computations = 1
        if prev_path.exists():  # a record that failed verification: count the recompute
            try:
                computations = int(json.loads(prev_path.read_text()).get("computations", 0)) + 1
            except (OSError, ValueError, json.JSONDecodeError):
                pass
        files = {}
        for name, arr in arrays.items():
            p = self.array_path(name, shard)
            _save_npy(p, arr)
            files[name] = {
                "file": str(p.relative_to(self.root)),
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "bytes": p.stat().st_size,
                "sha256": file_sha256(p),
            }
        rec = {
            "shard": shard.id, "start": shard.start, "stop": shard.stop,
            "spec_hash": self.spec.hash, "run_id": self.run_id, "finished": _now(),
            "computations": computations, "arrays": files, **dict(info or {}),
        }
        _write_json(self.record_path(shard), rec)
        self.records[shard.id] = rec
        self.write_manifest("running")
        return rec

    def write_manifest(self, status: str, force: bool = False, extra: Mapping | None = None):
        now = time.monotonic()
        if not force and now - self._last_manifest < 2.0:
            return
        self._last_manifest = now
        shards = []
        for s in self.shards:
            rec = self.records.get(s.id)
            entry = {"id": s.id, "start": s.start, "stop": s.stop,
                     "status": "done" if rec else "pending"}
            if rec:
                entry.update(finished=rec["finished"], run_id=rec["run_id"],
                             computations=rec["computations"],
                             checksums={k: v["sha256"] for k, v in rec["arrays"].items()})
            shards.append(entry)
        data = {
            "format": FORMAT_VERSION, "kind": "interpcore-job", "spec_hash": self.spec.hash,
            "spec": self.spec.to_dict(), "num_samples": self.n, "shard_size": self.spec.shard_size,
            "status": status, "updated": _now(), "last_run_id": self.run_id,
            "shards_done": sum(1 for s in shards if s["status"] == "done"),
            "shards_total": len(shards), "shards": shards, "runner": _runner(),
            **dict(extra or {}),
        }
        _write_json(self.manifest_path, data)

    def array_names(self) -> dict[str, dict]:
        names: dict[str, dict] = {}
        for s in self.shards:
            for k, v in self.records.get(s.id, {}).get("arrays", {}).items():
                names.setdefault(k, {"shape": [0] + v["shape"][1:], "dtype": v["dtype"]})
                names[k]["shape"][0] += v["shape"][0]
        return names

    def means(self) -> dict:
        """Mean over all images of every method array (fields excluded), float64 sums."""
        import numpy as np

        out = {}
        for name in self.array_names():
            if name in self.spec.fields:
                continue
            total, count = None, 0
            for s in self.shards:
                a = np.load(self.array_path(name, s), allow_pickle=False)
                part = a.astype(np.float64).sum(axis=0)
                total = part if total is None else total + part
                count += a.shape[0]
            if total is not None and count:
                mean = total / count
                _save_npy(self.root / "means" / f"{name}.npy", mean)
                out[name] = float(mean) if mean.ndim == 0 else f"means/{name}.npy"
        return out




@dataclasses.dataclass
class JobResult(Result):
    """What a finished (or resumed) job produced; ``load(name)`` reads an array back."""

    out_dir: str
    spec_hash: str
    engine: str
    num_samples: int
    num_shards: int
    computed: list  #: shard ids computed by this run
    skipped: list  #: shard ids found done and reused
    arrays: dict  #: name -> {"shape": [...], "dtype": ...}
    means: dict  #: name -> float (per-image scalars) or the path of a means/<name>.npy file
    seconds: float = 0.0  #: wall time of this run, start-up included
    images_per_second: float = 0.0  #: images computed / (seconds - setup_seconds)
    workers: int = 1
    setup_seconds: float = 0.0  #: starting workers and loading the model(s)

    def load(self, name: str, mmap: bool = False):
        """The whole array ``name`` (all shards, in dataset order)."""
        return load_array(self.out_dir, name, mmap=mmap)

    def mean(self, name: str):
        import numpy as np

        if name not in self.means:
            raise EngineError(f"no mean for '{name}'; arrays with means: {', '.join(self.means)}")
        value = self.means[name]
        return value if isinstance(value, float) else np.load(Path(self.out_dir) / value)

    def __str__(self) -> str:
        lines = [
            f"job {self.spec_hash} [{self.engine}, {self.workers} worker(s)]: {self.num_samples} "
            f"images in {self.num_shards} shards -> {self.out_dir}",
            f"  computed {len(self.computed)} shard(s), reused {len(self.skipped)}; "
            f"{self.seconds:.1f} s ({self.setup_seconds:.1f} s start-up), "
            f"{self.images_per_second:.1f} images/s",
        ]
        for name, info in self.arrays.items():
            m = self.means.get(name)
            mtxt = f"  mean {m:.6g}" if isinstance(m, float) else ""
            lines.append(f"  {name:<16} {info['dtype']:<8} {tuple(info['shape'])}{mtxt}")
        return "\n".join(lines)


def _proc_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _runner() -> dict:
    """Who writes the manifest: host, pid (and its start time), so a reader can tell a job
    that is still running from one whose process was killed."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid())}


def live_status(manifest: Mapping) -> tuple[str, str]:
    """(status, note): the manifest's status, except that a job recorded as ``running`` whose
    process is gone (same host, pid dead or reused) is ``interrupted``. A job run on another
    host cannot be checked from here; the note says so."""
    import socket

    status = str(manifest.get("status"))
    runner = manifest.get("runner") or {}
    if status != "running" or not runner.get("pid"):
        return status, ""
    if runner.get("host") != socket.gethostname():
        return status, f"as last recorded by host {runner.get('host')}; it cannot be checked from here"
    pid = int(runner["pid"])
    alive = True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        alive = False
    except PermissionError:
        alive = True
    if alive and runner.get("pid_start") and _proc_start(pid) not in (None, runner["pid_start"]):
        alive = False  # the pid now belongs to another process
    if alive:
        return status, f"pid {pid}"
    return "interrupted", (f"its process (pid {pid}) is gone: killed or crashed; rerun the same "
                           "command to resume")


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise EngineError(f"{out_dir} has no {MANIFEST}: not a job output folder")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path} is not a readable job manifest ({exc})") from None


def load_array(out_dir, name: str, mmap: bool = False):
    """Concatenate array ``name`` over the shards of a finished job folder."""
    import numpy as np

    manifest = read_manifest(out_dir)
    if manifest.get("status") != "complete":
        raise EngineError(f"the job in {out_dir} is not complete ({manifest.get('shards_done')}"
                          f"/{manifest.get('shards_total')} shards); rerun it to finish")
    parts = []
    for s in manifest["shards"]:
        p = Path(out_dir) / "arrays" / name / f"shard-{s['id']:05d}.npy"
        if not p.exists():
            names = sorted(d.name for d in (Path(out_dir) / "arrays").iterdir())
            raise EngineError(f"no array '{name}' in {out_dir}; arrays: {', '.join(names)}")
        parts.append(np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False))
    return np.concatenate(parts) if parts else np.empty((0,))


def iter_shards(out_dir, names: Sequence[str], mmap: bool = False):
    """Yield ``{name: array}`` shard by shard (dataset order) from a finished job folder, so
    statistics over large outputs never need the whole array in memory."""
    import numpy as np

    manifest = read_manifest(out_dir)
    if manifest.get("status") != "complete":
        raise EngineError(f"the job in {out_dir} is not complete; rerun it to finish")
    for s in manifest["shards"]:
        out = {}
        for name in names:
            p = Path(out_dir) / "arrays" / name / f"shard-{s['id']:05d}.npy"
            if not p.exists():
                raise EngineError(f"no array '{name}' in {out_dir}")
            out[name] = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        yield out


def default_job_dir(spec: JobSpec) -> Path:
    """Where a command keeps a job's shards when the user names no folder: the user cache,
    keyed by the spec hash (so rerunning the same command resumes)."""
    from ..cache import cache_dir

    return cache_dir("jobs", spec.hash)


def job_result(out_dir) -> JobResult:
    """The :class:`JobResult` of a finished job folder (without running anything)."""
    m = read_manifest(out_dir)
    last = m.get("last_run", {})
    return JobResult(
        out_dir=str(out_dir), spec_hash=m["spec_hash"], engine=last.get("engine", "?"),
        num_samples=m["num_samples"], num_shards=m["shards_total"],
        computed=last.get("computed", []), skipped=last.get("skipped", []),
        arrays=m.get("arrays", {}), means=m.get("means", {}), seconds=last.get("seconds", 0.0),
        images_per_second=last.get("images_per_second", 0.0), workers=last.get("workers", 1),
        setup_seconds=last.get("setup_seconds", 0.0),
    )


def run_section(result: JobResult) -> dict:
    """A run.json section (see :mod:`interpcore.report`) describing a job's outputs."""
    rows = []
    for name, info in result.arrays.items():
        m = result.means.get(name)
        rows.append([name, "x".join(map(str, info["shape"])), info["dtype"],
                     round(m, 6) if isinstance(m, float) else (m or "")])
    return {
        "title": "Job outputs",
        "text": (f"{result.num_samples} images in {result.num_shards} shards, engine "
                 f"{result.engine} with {result.workers} worker(s); {len(result.computed)} "
                 f"shard(s) computed by this run, {len(result.skipped)} reused from an earlier "
                 f"run. Per-image arrays are in {result.out_dir}/arrays/<name>/shard-*.npy "
                 "(load them with interpcore.engine.load_array); means are over images."),
        "tables": [{"title": "Arrays", "columns": ["array", "shape", "dtype", "mean"],
                    "rows": rows}],
    }


