"""The output folder of a job: manifest, per-shard arrays and records (:class:`JobStore`),
and the readers of finished job folders (:func:`load_array`, :func:`iter_shards`,
:func:`read_manifest`, :func:`job_result`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..base import Result
from ..cache import atomic_path
from .spec import FORMAT_VERSION, EngineError, JobSpec, Shard


MANIFEST = "manifest.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _npy_bytes(array) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _json_bytes(data) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()


class Location:
    """Where a job's files live: a local folder, or any fsspec URL (``s3://``, ``gs://``,
    ``file://``, ``memory://``, ...). Paths are relative to the job folder, ``/``-separated.

    Every write is atomic: a local file goes through a temporary file and a rename; on other
    file systems the data is written under a temporary name and moved onto its name (a move
    is a copy on object stores, so the shard record, written last, is what marks a shard
    done). Pickles as its URL, so workers open the same place.
    """

    def __init__(self, url):
        import fsspec

        self.url = str(url)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:  # unknown protocol, or its package missing
            raise EngineError(f"cannot open the job folder {self.url}: {exc}") from None
        self.root = self.root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols or "local" in protocols

    def __getstate__(self):  # a local folder travels as its absolute path: workers' cwd differs
        return {"url": self.root if self.is_local else self.url}

    def __setstate__(self, state):
        self.__init__(state["url"])

    def __str__(self) -> str:
        return self.url

    @property
    def protocol(self) -> str:
        p = self.fs.protocol
        return p[0] if isinstance(p, tuple) else p

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def size(self, rel: str) -> int | None:
        try:
            return int(self.fs.size(self.path(rel)))
        except (FileNotFoundError, OSError):
            return None

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def load_npy(self, rel: str, mmap: bool = False):
        import numpy as np

        if self.is_local:
            return np.load(self.path(rel), mmap_mode="r" if mmap else None, allow_pickle=False)
        return np.load(io.BytesIO(self.read_bytes(rel)), allow_pickle=False)

    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self.path(rel)
        if self.is_local:
            with atomic_path(final) as tmp:
                Path(tmp).write_bytes(data)
            return
        parent = final.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{final.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.part"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, final)

    def makedirs(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(rel), detail=False))
        except (FileNotFoundError, OSError):
            return []


def array_file(name: str, shard: Shard) -> str:
    return f"arrays/{name}/{shard.label}.npy"


def record_file(shard: Shard) -> str:
    return f"records/{shard.label}.json"


def table_file(shard: Shard) -> str:
    return f"tables/{shard.label}.parquet"


#: Parquet field metadata of a column whose values are JSON text (dicts, lists)
JSON_COLUMN = {b"interpcore.encoding": b"json"}


def _json_column(values: list):
    """A list of JSON values as a Parquet column: numbers and strings (with gaps as nulls)
    as they are, anything with dicts or lists as JSON text marked by :data:`JSON_COLUMN`."""
    import pyarrow as pa

    if not any(isinstance(v, (dict, list)) for v in values):
        try:
            return pa.array(values), None
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: fall back to JSON text
            pass
    return pa.array([None if v is None else json.dumps(v) for v in values], pa.string()), JSON_COLUMN


def _parquet_bytes(shard: Shard, arrays: Mapping,
                   extra: Mapping | None = None) -> tuple[bytes, list[str]] | None:
    """One shard's per-image scalars (1-d arrays) and vectors (2-d: one fixed-size list per
    image) as a Parquet table, with the dataset ``index`` of each row, plus ``extra`` columns
    (per-image JSON values, e.g. captions and attributes); ``None`` when the shard has none of
    these. Arrays of higher rank stay ``.npy`` only."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"index": pa.array(np.arange(shard.start, shard.stop, dtype=np.int64))}
    meta = {}
    for name, arr in arrays.items():
        if arr.ndim == 1:
            columns[name] = pa.array(arr)
        elif arr.ndim == 2 and arr.shape[1] > 0:
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)),
                                                              arr.shape[1])
    for name, values in (extra or {}).items():
        if len(values) != shard.size:
            raise EngineError(f"{shard.label}: field '{name}' has {len(values)} values for "
                              f"{shard.size} images")
        columns[name], meta[name] = _json_column(list(values))
    if len(columns) == 1:
        return None
    schema = pa.schema([pa.field(k, v.type, metadata=meta.get(k)) for k, v in columns.items()])
    buf = io.BytesIO()
    pq.write_table(pa.table(columns, schema=schema), buf)
    return buf.getvalue(), list(columns)


class ShardWriter:
    """Writes one shard's files where the job's output lives; runs in the worker that computed
    the shard (so per-image arrays never travel to the driver) and returns the shard's record,
    a small dict the driver keeps in the manifest. Pickles small: the output URL and ids."""

    def __init__(self, location: Location, spec_hash: str, run_id: str):
        self.location, self.spec_hash, self.run_id = location, spec_hash, run_id

    def write(self, shard: Shard, arrays: Mapping, info: Mapping | None = None,
              columns: Mapping | None = None) -> dict:
        """The shard's arrays, then its record (the record marks the shard done).
        ``columns``: per-image JSON values (lists) that go to the Parquet table only."""
        loc = self.location
        for name, arr in arrays.items():
            if arr.shape[0] != shard.size:
                raise EngineError(
                    f"{shard.label}: array '{name}' has {arr.shape[0]} rows for {shard.size} images"
                )
        computations = 1
        if loc.exists(record_file(shard)):  # a record that failed verification: count the recompute
            try:
                computations = int(loc.read_json(record_file(shard)).get("computations", 0)) + 1
            except (OSError, ValueError):
                pass
        files = {}
        for name, arr in arrays.items():
            data = _npy_bytes(arr)
            loc.write_bytes(array_file(name, shard), data)
            files[name] = {"file": array_file(name, shard), "shape": list(arr.shape),
                           "dtype": str(arr.dtype), "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()}
        table = _parquet_bytes(shard, arrays, columns)
        tables = {}
        if table is not None:
            data, columns = table
            loc.write_bytes(table_file(shard), data)
            tables["table"] = {"file": table_file(shard), "columns": columns, "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
        rec = {
            "shard": shard.id, "start": shard.start, "stop": shard.stop,
            "spec_hash": self.spec_hash, "run_id": self.run_id, "finished": _now(),
            "computations": computations, "arrays": files, "tables": tables,
            **dict(info or {}),
        }
        loc.write_bytes(record_file(shard), _json_bytes(rec))
        return rec


class JobStore:
    """The output folder of one job as the driver sees it: the manifest, and the records of
    the shards (the workers write the shards' files through :meth:`writer`)."""

    def __init__(self, out_dir, spec: JobSpec, shards: list[Shard], num_samples: int):
        self.location = out_dir if isinstance(out_dir, Location) else Location(out_dir)
        self.root = self.location.url
        self.spec, self.shards, self.n = spec, shards, num_samples
        self.run_id = uuid.uuid4().hex[:12]
        self.records: dict[int, dict] = {}
        self._last_manifest = 0.0

    def writer(self) -> ShardWriter:
        return ShardWriter(self.location, self.spec.hash, self.run_id)

    def open(self, overwrite: bool = False, verify: bool = True) -> list[Shard]:
        """Check the folder belongs to this job; return the shards still to compute."""
        loc = self.location
        loc.makedirs()
        old = None
        if loc.exists(MANIFEST):
            try:
                old = loc.read_json(MANIFEST)
            except (OSError, ValueError) as exc:
                raise EngineError(
                    f"{loc.path(MANIFEST)} is not a readable job manifest ({exc}); delete it "
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
        elif any(loc.exists(d) for d in ("arrays", "tables", "records")):
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
        for d in ("arrays", "tables", "records", "means", MANIFEST):
            self.location.remove(d)

    def _load_record(self, shard: Shard, verify: bool) -> dict | None:
        loc = self.location
        try:
            rec = loc.read_json(record_file(shard))
        except (OSError, ValueError):  # missing (FileNotFoundError) or unreadable
            return None
        if (rec.get("spec_hash") != self.spec.hash or rec.get("start") != shard.start
                or rec.get("stop") != shard.stop):
            return None
        files = list(rec.get("arrays", {}).values()) + list(rec.get("tables", {}).values())
        for info in files:
            if loc.size(info["file"]) != info.get("bytes"):
                return None
            if verify and hashlib.sha256(loc.read_bytes(info["file"])).hexdigest() != info.get("sha256"):
                return None
        return rec

    def record(self, shard: Shard, rec: Mapping) -> None:
        """Note a shard a worker wrote (its record is already in the folder)."""
        if rec.get("shard") != shard.id or rec.get("spec_hash") != self.spec.hash:
            raise EngineError(f"{shard.label}: the worker returned the record of another shard")
        self.records[shard.id] = dict(rec)
        self.write_manifest("running")

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
        self.location.write_bytes(MANIFEST, _json_bytes(data))

    def array_names(self) -> dict[str, dict]:
        names: dict[str, dict] = {}
        for s in self.shards:
            for k, v in self.records.get(s.id, {}).get("arrays", {}).items():
                names.setdefault(k, {"shape": [0] + v["shape"][1:], "dtype": v["dtype"]})
                names[k]["shape"][0] += v["shape"][0]
        return names

    def means(self) -> dict:
        """Mean over all images of every method array (fields excluded), float64 sums, read
        back one shard at a time (the driver's memory does not grow with the dataset)."""
        import numpy as np

        out = {}
        for name in self.array_names():
            if name in self.spec.fields:
                continue
            total, count = None, 0
            for s in self.shards:
                try:
                    a = self.location.load_npy(array_file(name, s))
                except FileNotFoundError:
                    raise EngineError(
                        f"{s.label} of '{name}' is recorded but not in {self.root}: workers on "
                        "other machines wrote it to their own disks; give the job a folder on "
                        "storage every node shares, or a URL (s3://, gs://, ...)") from None
                part = a.astype(np.float64).sum(axis=0)
                total = part if total is None else total + part
                count += a.shape[0]
            if total is not None and count:
                mean = total / count
                self.location.write_bytes(f"means/{name}.npy", _npy_bytes(mean))
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
        if name not in self.means:
            raise EngineError(f"no mean for '{name}'; arrays with means: {', '.join(self.means)}")
        value = self.means[name]
        return value if isinstance(value, float) else _open(self.out_dir).load_npy(value)

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


def _open(out_dir) -> Location:
    return out_dir if isinstance(out_dir, Location) else Location(out_dir)


def read_manifest(out_dir) -> dict:
    """The manifest of a job folder (a local path or an fsspec URL)."""
    loc = _open(out_dir)
    try:
        return loc.read_json(MANIFEST)
    except FileNotFoundError:
        raise EngineError(f"{out_dir} has no {MANIFEST}: not a job output folder") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"{loc.path(MANIFEST)} is not a readable job manifest ({exc})") from None


def _finished(out_dir, manifest: Mapping | None = None):
    """``(location, manifest, shards)`` of a finished job folder (shards as :class:`Shard`,
    in dataset order); an error naming how far it got when it is not finished."""
    loc = _open(out_dir)
    manifest = manifest or read_manifest(loc)
    if manifest.get("status") != "complete":
        raise EngineError(f"the job in {out_dir} is not complete ({manifest.get('shards_done')}"
                          f"/{manifest.get('shards_total')} shards); rerun it to finish")
    return loc, manifest, [Shard(s["id"], s["start"], s["stop"]) for s in manifest["shards"]]


def iter_shards(out_dir, names: Sequence[str], mmap: bool = False):
    """Yield ``{name: array}`` shard by shard (dataset order) from a finished job folder, so
    statistics over large outputs never need the whole array in memory. ``mmap`` maps local
    files instead of reading them."""
    loc, _, shards = _finished(out_dir)
    for s in shards:
        out = {}
        for name in names:
            rel = array_file(name, s)
            if not loc.exists(rel):
                raise EngineError(f"no array '{name}' in {out_dir}; arrays: "
                                  f"{', '.join(loc.listdir('arrays'))}")
            out[name] = loc.load_npy(rel, mmap=mmap)
        yield out


def load_table(out_dir):
    """The per-image scalars and vectors of a finished job as one ``pyarrow.Table`` in
    dataset order (``.to_pandas()`` for a DataFrame). The shard files themselves,
    ``OUT/tables/shard-*.parquet``, read directly with pandas, polars or DuckDB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    loc, _, shards = _finished(out_dir)
    parts = []
    for s in shards:
        rel = table_file(s)
        if not loc.exists(rel):
            raise EngineError(f"{out_dir} has no Parquet tables (a job written before they "
                              "existed, or one without per-image scalars or vectors)")
        parts.append(pq.read_table(io.BytesIO(loc.read_bytes(rel))))
    return pa.concat_tables(parts)


def load_columns(out_dir, names: Sequence[str]) -> dict[str, list]:
    """Per-image columns of a finished job's Parquet tables as Python lists in dataset order
    (JSON text columns decoded; a column absent from the tables is all ``None``)."""
    import pyarrow.parquet as pq

    loc, _, shards = _finished(out_dir)
    out: dict[str, list] = {n: [] for n in names}
    for s in shards:
        rel = table_file(s)
        table = pq.read_table(io.BytesIO(loc.read_bytes(rel))) if loc.exists(rel) else None
        for n in names:
            if table is None or n not in table.column_names:
                out[n].extend([None] * s.size)
                continue
            values = table.column(n).to_pylist()
            if (table.schema.field(n).metadata or {}).get(b"interpcore.encoding") == b"json":
                values = [None if v is None else json.loads(v) for v in values]
            out[n].extend(values)
    return out


class JobArray:
    """Array ``name`` of a finished job folder read lazily, shard by shard: ``a[rows]``,
    ``a[rows, ...]`` (rows: an int, a slice or an index array) reads only the shards those
    rows are in (memory-mapped where the folder is local); numpy functions and operators see
    the whole array (``np.asarray(a)``)."""

    def __init__(self, out_dir, name: str, manifest: Mapping | None = None):
        import numpy as np

        self.location, m, self._shards = _finished(out_dir, manifest)
        self.name = name
        info = (m.get("arrays") or {}).get(name)
        if info is None:
            raise EngineError(f"no array '{name}' in {out_dir}; arrays: "
                              f"{', '.join(m.get('arrays') or {}) or 'none'}")
        self.shape, self.dtype = tuple(info["shape"]), np.dtype(info["dtype"])
        self._starts = np.array([s.start for s in self._shards], dtype=np.int64)
        self._parts: dict[int, object] = {}

    ndim = property(lambda self: len(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def _part(self, j: int):
        if j not in self._parts:
            self._parts[j] = self.location.load_npy(array_file(self.name, self._shards[j]), mmap=True)
        return self._parts[j]

    def __getitem__(self, key):
        import numpy as np

        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        n = self.shape[0]
        if isinstance(rows, (int, np.integer)):
            r = int(rows) + n if rows < 0 else int(rows)
            if not 0 <= r < n:
                raise IndexError(f"row {rows} out of range for {n} rows")
            j = int(np.searchsorted(self._starts, r, side="right") - 1)
            return np.asarray(self._part(j)[(r - self._starts[j], *rest)])
        idx = np.arange(n)[rows] if isinstance(rows, slice) else np.asarray(rows)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"rows out of range for {n} rows")
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        parts, order = [], []
        for j in np.unique(shard):
            sel = np.nonzero(shard == j)[0]
            parts.append(np.asarray(self._part(int(j))[(idx[sel] - self._starts[j], *rest)]))
            order.append(sel)
        if not parts:
            return np.asarray(self._part(0)[(slice(0, 0), *rest)]) if self._shards else np.empty((0,))
        out = np.concatenate(parts)
        if len(parts) > 1 or not np.array_equal(order[0], np.arange(len(idx))):
            out[np.concatenate(order)] = out.copy()
        return out

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a.astype(dtype) if dtype is not None else a

    def __getattr__(self, attr):  # .sum(1), .mean(0), .astype(...): on the whole array
        if attr.startswith("_"):
            raise AttributeError(attr)
        import numpy as np

        return getattr(np.asarray(self), attr)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        import numpy as np

        inputs = [np.asarray(x) if isinstance(x, JobArray) else x for x in inputs]
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __neg__(self):
        import numpy as np

        return -np.asarray(self)

    def __repr__(self) -> str:
        return f"<JobArray {self.name} {self.shape} {self.dtype} in {self.location}>"


def _operator(op: str, reflected: bool):
    import operator

    fn = getattr(operator, op)

    def method(self, other):
        import numpy as np

        a = np.asarray(self)
        b = np.asarray(other) if isinstance(other, JobArray) else other
        return fn(b, a) if reflected else fn(a, b)

    return method


for _op in ("add", "sub", "mul", "truediv", "matmul", "pow"):  # operators on the whole array
    setattr(JobArray, f"__{_op}__", _operator(_op, False))
    setattr(JobArray, f"__r{_op}__", _operator(_op, True))
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(JobArray, f"__{_op}__", _operator(_op, False))
JobArray.__hash__ = None


def load_array(out_dir, name: str, mmap: bool = False):
    """Concatenate array ``name`` over the shards of a finished job folder."""
    import numpy as np

    parts = [shard[name] for shard in iter_shards(out_dir, [name], mmap=mmap)]
    return np.concatenate(parts) if parts else np.empty((0,))


def default_job_dir(spec: JobSpec) -> Path:
    """Where a command keeps a job's shards when the user names no folder: the user cache,
    keyed by the spec hash (so rerunning the same command resumes)."""
    from ..cache import cache_dir

    return cache_dir("jobs", spec.hash)


def job_folder(spec: JobSpec, job_dir=None, out=None, name: str = "job"):
    """Where a command keeps a job: ``job_dir`` (its ``--job-dir``) when given, else
    ``OUT/name`` when the command has an ``--out`` folder, else :func:`default_job_dir`."""
    if job_dir:
        return job_dir
    if out is not None:
        return Path(out) / name
    return default_job_dir(spec)


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


