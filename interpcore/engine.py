"""Sharded dataset jobs: run a backbone (and a method) over a whole dataset, resumably.

A *job* is everything that determines its output, written down as names and options (a
:class:`JobSpec`): the dataset, the backbone, the method (a registered decomposer or
explainer, or none for plain embeddings), the batch and shard sizes. The dataset's indices
are cut into fixed shards; each shard is processed by one call of :class:`ShardWorker`::

    read the shard's samples -> backbone preprocessing -> method on each batch
    -> a dict of per-image numpy arrays -> one .npy file per (shard, array)

Workers build the backbone and method *from their names* through the registry, so a
third-party backbone or decomposer runs through exactly the same path as a built-in one,
in this process (engine ``local``) or in Ray workers (engine ``ray``, see
:mod:`interpcore.engine_ray`).

Output folder::

    OUT/manifest.json                  spec, spec hash, shard list, status, checksums, means
    OUT/arrays/<name>/shard-00007.npy  rows [7 * shard_size, ...) of array <name>
    OUT/records/shard-00007.json       written after the shard's arrays: proof it is done
    OUT/means/<name>.npy               mean over all images (also in the manifest if scalar)

Every file is written atomically (temporary file + rename). A rerun with the same spec skips
the shards whose record and files check out (resume); a different spec refuses to write into
the folder. Averages are computed from the per-image arrays, never from batch means, so they
do not depend on how the images were batched or sharded.

From a method result to arrays (the *array protocol*), first match wins:

1. ``spec.adapter`` (``"module:function"``), called as ``function(result, n)``;
2. the result's ``to_arrays()`` method;
3. a mapping, a dataclass or a plain tensor / array: every value whose first dimension is
   the batch size becomes an array (tensors are moved to the CPU; ``None`` and batch-level
   scalars are dropped).

This module imports neither torch nor numpy at import time, so command-line modules can use
:func:`engine_options` without slowing ``interp --help`` down.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import glob
import hashlib
import importlib
import io
import json
import os
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import Result
from .cache import atomic_path, file_sha256, write_text
from .errors import InterpError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENGINES = ("local", "ray")
INPUTS = ("pixels", "images", "embeddings")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class EngineError(InterpError):
    """A job that cannot run, or an output folder that does not match its job."""


# --------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobSpec:
    """Everything that determines a job's output, as names and JSON-able options.

    ``dataset`` is a registered dataset name, ``folder:DIR`` (an image folder; one class per
    first-level subfolder when there are subfolders) or ``webdataset:PATTERN`` (WebDataset
    style ``.tar`` shards: a glob or comma-separated list; members sharing a key form one
    sample, ``.cls`` gives the label). ``method`` is a registered decomposer or explainer
    (``kind``) called with ``verb`` (default ``decompose`` / ``explain``) on each batch of
    ``inputs`` (``pixels``: preprocessed tensors on the backbone's device, ``images``: PIL
    images, ``embeddings``: ``encode_image`` outputs), plus ``call_options``. Without a
    method the job stores image embeddings (or ``features`` of ``call_options["layer"]``).
    ``plugins`` are ``module`` or ``module:attr`` names registered as plugins in every
    worker (for plugins that are not installed as entry points, e.g. in tests).
    """

    dataset: str
    backbone: str
    method: str | None = None
    kind: str = "decomposer"
    verb: str | None = None
    inputs: str = "pixels"
    split: str = "test"
    dataset_options: dict = dataclasses.field(default_factory=dict)
    backbone_options: dict = dataclasses.field(default_factory=dict)
    method_options: dict = dataclasses.field(default_factory=dict)
    call_options: dict = dataclasses.field(default_factory=dict)
    adapter: str | None = None
    fields: tuple = ("label", "group")
    batch_size: int = 64
    shard_size: int = 256
    limit: int | None = None
    plugins: tuple = ()

    def __post_init__(self):
        self.fields = tuple(self.fields)
        self.plugins = tuple(self.plugins)
        self.validate()

    def validate(self) -> JobSpec:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise EngineError("a job needs a dataset name (or folder:DIR / webdataset:PATTERN)")
        if not isinstance(self.backbone, str) or ":" not in self.backbone:
            raise EngineError(
                f"a job needs a backbone name as 'library:model', got {self.backbone!r}"
            )
        if self.kind not in ("decomposer", "explainer"):
            raise EngineError(f"kind must be 'decomposer' or 'explainer', got {self.kind!r}")
        if self.inputs not in INPUTS:
            raise EngineError(f"inputs must be one of {', '.join(INPUTS)}, got {self.inputs!r}")
        for name in ("batch_size", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EngineError(f"{name} must be a positive integer, got {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 0):
            raise EngineError(f"limit must be a non-negative integer or None, got {self.limit!r}")
        if self.adapter is not None and not _is_import_path(self.adapter):
            raise EngineError(
                f"adapter must be an import path 'module:function', got {self.adapter!r}"
            )
        for p in self.plugins:
            if not isinstance(p, str) or not p or p.count(":") > 1:
                raise EngineError(f"plugins are 'module' or 'module:attr' names, got {p!r}")
        try:
            json.dumps(self.to_dict())
        except TypeError as exc:
            raise EngineError(f"job options must be JSON values (names, numbers): {exc}") from None
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["fields"] = list(self.fields)
        d["plugins"] = list(self.plugins)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> JobSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EngineError(f"unknown job spec keys: {', '.join(unknown)}")
        return cls(**dict(d))

    @property
    def hash(self) -> str:
        """A hash of everything that changes the output (not how or where it runs)."""
        text = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def verb_name(self) -> str:
        return self.verb or ("decompose" if self.kind == "decomposer" else "explain")


def _is_import_path(text) -> bool:
    return isinstance(text, str) and text.count(":") == 1 and all(text.split(":"))


def import_object(path: str):
    """``module:attr.sub`` -> the object (``module`` alone -> the module)."""
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise EngineError(f"cannot import '{module}' (named in the job spec): {exc}") from None
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EngineError(f"'{module}' has no attribute '{attr}' (named in the job spec)") from None
    return obj


def callable_path(func: Callable) -> str:
    """The ``module:qualname`` import path of a module-level function (for ``adapter``)."""
    module, qual = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or "<" in qual or module == "__main__":
        raise EngineError(
            f"{func!r} is not importable by name from a worker: use a module-level function "
            "in an importable module"
        )
    return f"{module}:{qual}"


@dataclasses.dataclass(frozen=True)
class Shard:
    id: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def label(self) -> str:
        return f"shard-{self.id:05d}"


def make_shards(n: int, shard_size: int) -> list[Shard]:
    return [Shard(i, s, min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]


# --------------------------------------------------------------------------------------
# Reading samples (folder:, webdataset:, or a registered dataset)
# --------------------------------------------------------------------------------------


class ImageFolderSource:
    """Images under a folder, sorted by path; labels from first-level subfolders."""

    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise EngineError(f"image folder not found: {self.root}")
        self.paths = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise EngineError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        parts = [p.relative_to(self.root).parts for p in self.paths]
        nested = all(len(x) > 1 for x in parts)
        self.classes = sorted({x[0] for x in parts}) if nested else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except OSError as exc:
            raise EngineError(f"{path} is not an image that can be read ({exc})") from None
        sample = {"image": image, "index": i, "path": str(path)}
        if self.classes is not None:
            sample["label"] = self.classes.index(path.relative_to(self.root).parts[0])
        return sample


class TarShardsSource:
    """WebDataset-style ``.tar`` shards: members sharing a key (``dir/key.ext``) form a sample.

    The index (which tar, which members) is built once by reading the tar headers; a sample
    is read by seeking to its members. ``.cls`` / ``.label`` members give an int label,
    ``.txt`` / ``.caption`` a caption.
    """

    def __init__(self, pattern: str):
        paths: list[str] = []
        for part in pattern.split(","):
            part = os.path.expanduser(part.strip())
            hits = sorted(glob.glob(part))
            if not hits and os.path.isfile(part):
                hits = [part]
            paths.extend(hits)
        if not paths:
            raise EngineError(f"no tar shards match '{pattern}'")
        self.paths = paths
        self.samples: list[tuple[int, dict[str, tarfile.TarInfo]]] = []
        for t, path in enumerate(paths):
            try:
                with tarfile.open(path) as tar:
                    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
                    order: list[str] = []
                    for info in tar.getmembers():
                        if not info.isfile():
                            continue
                        folder, _, base = info.name.rpartition("/")
                        stem, dot, ext = base.partition(".")  # WebDataset: key = up to first dot
                        key = f"{folder}/{stem}" if folder else stem
                        if not dot:
                            continue
                        if key not in groups:
                            groups[key] = {}
                            order.append(key)
                        groups[key][ext.lower()] = info
            except (tarfile.TarError, OSError) as exc:
                raise EngineError(f"{path} is not a readable tar shard ({exc})") from None
            for key in order:
                members = groups[key]
                if any(("." + e.rsplit(".", 1)[-1]) in IMAGE_SUFFIXES for e in members):
                    self.samples.append((t, members))
        if not self.samples:
            raise EngineError(f"the tar shards matching '{pattern}' contain no images")
        self._open: dict[int, tarfile.TarFile] = {}
        self.classes = None

    def __len__(self) -> int:
        return len(self.samples)

    def _tar(self, t: int) -> tarfile.TarFile:
        if t not in self._open:
            self._open[t] = tarfile.open(self.paths[t])
        return self._open[t]

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        t, members = self.samples[i]
        tar = self._tar(t)
        sample: dict[str, Any] = {"index": i}
        for ext, info in members.items():
            last = "." + ext.rsplit(".", 1)[-1]
            data = tar.extractfile(info).read()
            if last in IMAGE_SUFFIXES and "image" not in sample:
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        sample["image"] = im.convert("RGB")
                except OSError as exc:
                    raise EngineError(f"{self.paths[t]}:{info.name} is not an image ({exc})") from None
            elif ext in ("cls", "label"):
                try:
                    sample["label"] = int(data.decode().strip())
                except ValueError:
                    raise EngineError(f"{self.paths[t]}:{info.name} is not an integer label") from None
            elif ext in ("txt", "caption"):
                sample["caption"] = data.decode("utf-8", "replace").strip()
        return sample

    def __getstate__(self):  # open tar handles do not travel between processes
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


_sources: dict[str, Any] = {}
_registered_plugins: set[str] = set()


def ensure_plugins(spec: JobSpec) -> None:
    """Register the spec's extra plugins in this process (once per process)."""
    from .registry import get_registry

    for path in spec.plugins:
        if path in _registered_plugins:
            continue
        obj = import_object(path)
        name = path.replace(":", ".")
        reg = get_registry()
        if name not in reg.manager.statuses and not reg.manager.pm.is_registered(obj):
            status = reg.register_plugin(obj, name)
            if getattr(status, "status", "ok") != "ok":
                raise EngineError(f"plugin '{path}' failed to register: {status.error}")
        _registered_plugins.add(path)


def open_dataset(spec: JobSpec):
    """The job's dataset (cached per process: workers open it once)."""
    key = json.dumps([spec.dataset, spec.split, spec.dataset_options, list(spec.plugins)],
                     sort_keys=True)
    if key not in _sources:
        if spec.dataset.startswith("folder:"):
            _sources[key] = ImageFolderSource(spec.dataset[len("folder:"):])
        elif spec.dataset.startswith("webdataset:"):
            _sources[key] = TarShardsSource(spec.dataset[len("webdataset:"):])
        else:
            ensure_plugins(spec)
            from .registry import get_registry

            _sources[key] = get_registry().get_dataset(
                spec.dataset, split=spec.split, **spec.dataset_options
            )
    return _sources[key]


def num_samples(spec: JobSpec) -> int:
    n = len(open_dataset(spec))
    return n if spec.limit is None else min(n, spec.limit)


def read_samples(spec: JobSpec, start: int, stop: int) -> tuple[list, dict]:
    """Images ``[start, stop)`` as ``(H, W, 3)`` uint8 arrays, plus the requested fields.

    Both engines go through this function, so they see byte-identical pixels.
    """
    import numpy as np

    dataset = open_dataset(spec)
    images, fields = [], {f: [] for f in spec.fields}
    for i in range(start, stop):
        sample = dataset[i]
        if "image" not in sample:
            raise EngineError(f"dataset '{spec.dataset}' sample {i} has no 'image'")
        image = sample["image"]
        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise EngineError(f"dataset '{spec.dataset}' sample {i} is not an RGB image")
        images.append(np.ascontiguousarray(arr, dtype=np.uint8))
        for f in spec.fields:
            fields[f].append(sample.get(f))
    # a field is kept only when every sample has it as a number
    kept = {}
    for f, values in fields.items():
        if values and all(isinstance(v, (int, float, bool, np.integer, np.floating)) for v in values):
            kept[f] = np.asarray(values)
    return images, kept


# --------------------------------------------------------------------------------------
# Computing a shard
# --------------------------------------------------------------------------------------


def to_arrays(result, n: int, adapter: Callable | None = None) -> dict:
    """A method result for ``n`` images -> ``{name: numpy array with first dim n}``.

    See the module docstring for the protocol.
    """
    import numpy as np

    if adapter is not None:
        raw = adapter(result, n)
    elif hasattr(result, "to_arrays") and callable(result.to_arrays):
        raw = result.to_arrays()
    elif isinstance(result, Mapping):
        raw = dict(result)
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        raw = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    elif hasattr(result, "shape"):
        raw = {"output": result}
    else:
        raise EngineError(
            f"cannot turn a {type(result).__name__} into per-image arrays: give the result a "
            "to_arrays() method or pass adapter='module:function' in the job spec"
        )
    if not isinstance(raw, Mapping):
        raise EngineError(f"to_arrays / adapter must return a dict, got {type(raw).__name__}")
    out = {}
    for name, value in raw.items():
        if value is None:
            continue
        if hasattr(value, "detach"):
            value = value.detach().cpu()
            if str(value.dtype) == "torch.bfloat16":
                value = value.float()
            value = value.numpy()
        elif isinstance(value, (list, tuple)) and len(value) == n:
            try:
                value = np.asarray(value)
            except (ValueError, TypeError):
                continue
            if value.dtype == object:
                continue
        if not isinstance(value, np.ndarray) or value.ndim == 0 or value.shape[0] != n:
            continue  # batch-level scalars, vocabularies, ... are not per-image arrays
        if value.dtype.kind not in "biuf":
            continue
        if not _NAME_RE.match(str(name)):
            raise EngineError(f"array name {name!r} is not usable as a file name")
        out[str(name)] = np.ascontiguousarray(value)
    if not out:
        keys = ", ".join(map(str, raw)) or "nothing"
        raise EngineError(
            f"the method result has no per-image arrays (fields: {keys}); each array's first "
            f"dimension must be the batch size {n}"
        )
    return out


class ShardWorker:
    """Builds the backbone and method from the spec's names, then computes shards.

    One worker holds one model; the Ray engine runs one per actor.
    """

    def __init__(self, spec: JobSpec | Mapping, device: str = "auto", threads: int | None = None):
        self.spec = spec if isinstance(spec, JobSpec) else JobSpec.from_dict(spec)
        self.device = device
        self.threads = threads
        self._backbone = None
        self._method = None
        self._adapter = None
        self.shards_done = 0

    def _setup(self):
        if self._backbone is not None:
            return
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        ensure_plugins(self.spec)
        from .registry import get_registry

        reg = get_registry()
        opts = dict(self.spec.backbone_options)
        self._backbone = reg.get_backbone(self.spec.backbone, device=self.device, **opts)
        if self.spec.method:
            getter = reg.get_decomposer if self.spec.kind == "decomposer" else reg.get_explainer
            self._method = getter(self.spec.method, self._backbone, **self.spec.method_options)
            if not callable(getattr(self._method, self.spec.verb_name, None)):
                raise EngineError(
                    f"{self.spec.kind} '{self.spec.method}' has no method "
                    f"'{self.spec.verb_name}()'"
                )
        if self.spec.adapter:
            self._adapter = import_object(self.spec.adapter)

    @property
    def backbone(self):
        self._setup()
        return self._backbone

    def _pixels(self, images):
        bb = self._backbone
        if hasattr(bb, "to_pixels"):
            return bb.to_pixels(images)
        import torch

        return torch.stack([bb.preprocess(im) for im in images])

    def _run_batch(self, images) -> dict:
        import torch

        spec, bb = self.spec, self._backbone
        with torch.no_grad():
            if self._method is None:
                pixels = self._pixels(images)
                layer = spec.call_options.get("layer")
                if layer:
                    out = bb.features(pixels, layer, batch_size=len(images))
                    return to_arrays({"features": out}, len(images))
                z = bb.encode_image(pixels, batch_size=len(images),
                                    normalize=bool(spec.call_options.get("normalize", False)))
                return to_arrays({"embedding": z}, len(images))
            if spec.inputs == "pixels":
                inputs = self._pixels(images)
            elif spec.inputs == "images":
                from PIL import Image

                inputs = [Image.fromarray(im) for im in images]
            else:
                inputs = bb.encode_image(self._pixels(images), batch_size=len(images))
        verb = getattr(self._method, spec.verb_name)
        result = verb(inputs, **spec.call_options)  # outside no_grad: Grad-CAM needs gradients
        return to_arrays(result, len(images), self._adapter)

    def compute(self, images: Sequence, fields: Mapping | None = None) -> dict:
        """Per-image arrays for one shard's images (``(H, W, 3)`` uint8 arrays)."""
        import numpy as np

        self._setup()
        bs = self.spec.batch_size
        parts: dict[str, list] = {}
        for start in range(0, len(images), bs):
            arrays = self._run_batch(list(images[start:start + bs]))
            if parts and set(arrays) != set(parts):
                raise EngineError(
                    f"the method returned different arrays for different batches: "
                    f"{sorted(parts)} vs {sorted(arrays)}"
                )
            for k, v in arrays.items():
                parts.setdefault(k, []).append(v)
        out = {}
        for k, vs in parts.items():
            if len({v.shape[1:] for v in vs}) > 1:
                raise EngineError(f"array '{k}' has a different shape per image in different batches")
            out[k] = np.concatenate(vs)
        for k, v in (fields or {}).items():
            if k in out:
                raise EngineError(f"the method returned an array named like the field '{k}'")
            out[k] = np.asarray(v)
        self.shards_done += 1
        return out

    def compute_shard(self, shard: Shard) -> dict:
        images, fields = read_samples(self.spec, shard.start, shard.stop)
        return self.compute(images, fields)


# --------------------------------------------------------------------------------------
# The output folder
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


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
    from .cache import cache_dir

    return cache_dir("jobs", spec.hash)


# --------------------------------------------------------------------------------------
# Engines and the runner
# --------------------------------------------------------------------------------------


class LocalEngine:
    """Everything in this process: the single-process reference path."""

    name = "local"

    def __init__(self, device: str = "auto", **_ignored):
        self.device = device
        self.workers = 1
        self.setup_seconds = 0.0

    def run(self, spec: JobSpec, shards: list[Shard], sink: Callable, bar=None) -> None:
        t0 = time.perf_counter()
        worker = ShardWorker(spec, device=self.device)
        worker._setup()
        self.setup_seconds = time.perf_counter() - t0
        for shard in shards:
            t0 = time.perf_counter()
            arrays = worker.compute_shard(shard)
            sink(shard, arrays, {"engine": "local", "worker": f"pid{os.getpid()}",
                                 "seconds": round(time.perf_counter() - t0, 4)})
            if bar is not None:
                bar.update(shard.size)


def get_engine(name: str, **options):
    if name == "local":
        return LocalEngine(**options)
    if name == "ray":
        from .engine_ray import RayEngine

        return RayEngine(**options)
    from .errors import close_matches

    near = close_matches(name, ENGINES)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise EngineError(f"unknown engine '{name}'.{hint} Engines: {', '.join(ENGINES)}.")


def _check_names(spec: JobSpec) -> None:
    """The backbone family and the method must be registered (cheap, no model is loaded)."""
    from .registry import get_registry

    if spec.plugins:  # plugins named for the workers may register the names; they decide
        return
    reg = get_registry()
    if isinstance(spec.backbone, str) and ":" in spec.backbone:
        reg.entry("backbone", spec.backbone.partition(":")[0])
    if spec.method:
        reg.entry(spec.kind, spec.method)


def run_job(spec: JobSpec | Mapping, out_dir, *, engine: str = "local", overwrite: bool = False,
            verify: bool = True, progress: bool = True, **engine_options) -> JobResult:
    """Run (or resume) a job into ``out_dir`` and return what it produced.

    ``engine_options`` go to the engine: ``device`` for ``local``; ``address``,
    ``num_workers``, ``num_cpus``, ``cpus_per_worker``, ``gpus_per_worker`` for ``ray``.
    """
    spec = spec if isinstance(spec, JobSpec) else JobSpec.from_dict(spec)
    eng = get_engine(engine, **engine_options)
    n = num_samples(spec)
    if n == 0:
        raise EngineError(f"dataset '{spec.dataset}' has no samples to process")
    shards = make_shards(n, spec.shard_size)
    _check_names(spec)  # before the job folder is made: a typo leaves nothing behind
    store = JobStore(out_dir, spec, shards, n)
    pending = store.open(overwrite=overwrite, verify=verify)
    pending_ids = {s.id for s in pending}
    skipped = [s.id for s in shards if s.id not in pending_ids]
    computed: list[int] = []

    def sink(shard: Shard, arrays: Mapping, info: Mapping | None = None):
        store.save_shard(shard, arrays, info)
        computed.append(shard.id)

    bar = None
    if progress:
        from .progress import progress as _progress

        bar = _progress(total=sum(s.size for s in pending), desc=f"{spec.method or 'embed'} [{engine}]",
                        unit="img")
    t0 = time.perf_counter()
    try:
        if pending:
            eng.run(spec, pending, sink, bar=bar)
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


# --------------------------------------------------------------------------------------
# Command-line options shared by dataset-level commands
# --------------------------------------------------------------------------------------


def engine_run_args(kw: Mapping, device: str = "auto") -> dict:
    """``run_job`` keyword arguments from the values of :func:`engine_options`."""
    args = {"engine": kw.get("engine") or "local", "overwrite": bool(kw.get("overwrite"))}
    if args["engine"] == "ray":
        args.update(address=kw.get("address"), num_workers=kw.get("workers"))
    else:
        args["device"] = device
    return args


def engine_options(func):
    """Click decorator adding ``--engine/--address/--workers/--shard-size/--job-dir/--overwrite``.

    The command receives ``engine, address, workers, shard_size, job_dir, overwrite``; pass
    them to :func:`run_job` (``address``/``workers`` only matter for ``--engine ray``).
    """
    import click

    opts = [
        click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                     help="Run in this process (local) or on a Ray cluster (ray)."),
        click.option("--address", default=None,
                     help="Ray cluster address (e.g. ray://head:10001 or auto); default: start "
                          "a local cluster on 127.0.0.1."),
        click.option("--workers", type=int, default=None,
                     help="Ray model workers (one model each); default: one per GPU, else per CPU."),
        click.option("--shard-size", type=int, default=256, show_default=True,
                     help="Images per shard (the unit of resume)."),
        click.option("--job-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder for the per-shard arrays and manifest (resumable)."),
        click.option("--overwrite", is_flag=True, help="Replace a job folder of a different job."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


__all__ = [
    "EngineError", "JobResult", "JobSpec", "JobStore", "LocalEngine", "Shard", "ShardWorker",
    "callable_path", "default_job_dir", "engine_options", "engine_run_args", "get_engine", "iter_shards",
    "job_result", "load_array", "make_shards",
    "num_samples", "open_dataset", "read_manifest", "read_samples", "run_job", "run_section",
    "to_arrays",
]
