"""Reading a job's samples: ``folder:DIR`` and ``webdataset:PATTERN`` readers, or a
registered dataset; :func:`read_samples` is what every engine reads pixels through."""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from .spec import EngineError, JobSpec, import_object


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")


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
_registered_plugins: set[tuple[int, str]] = set()  # (id of the registry, plugin path)


def ensure_plugins(spec: JobSpec) -> None:
    """Register the spec's extra plugins in this process (once per process)."""
    from ..registry import get_registry

    reg = get_registry()
    for path in spec.plugins:
        if (id(reg), path) in _registered_plugins:
            continue
        obj = import_object(path)
        name = path.replace(":", ".")
        if name not in reg.manager.statuses and not reg.manager.pm.is_registered(obj):
            status = reg.register_plugin(obj, name)
            if getattr(status, "status", "ok") != "ok":
                raise EngineError(f"plugin '{path}' failed to register: {status.error}")
        _registered_plugins.add((id(reg), path))


_bound: dict[str, Any] = {}


def bind_dataset(name: str, dataset) -> str:
    """Make the in-process ``dataset`` object readable by this process's engines under the
    job dataset ``name`` (for objects no name and options describe; Ray workers cannot read
    it). Returns ``name``."""
    if not isinstance(name, str) or not name.startswith("object:"):
        raise EngineError(f"a bound dataset's name starts with 'object:', got {name!r}")
    _bound[name] = dataset
    return name


def open_dataset(spec: JobSpec):
    """The job's dataset (cached per process: workers open it once)."""
    if spec.dataset.startswith("object:"):
        if spec.dataset not in _bound:
            raise EngineError(f"dataset '{spec.dataset}' is a Python object of another process: "
                              "only the local engine of the process that made it can read it; "
                              "register the dataset as a plugin to run it elsewhere")
        return _bound[spec.dataset]
    key = json.dumps([spec.dataset, spec.split, spec.dataset_options, list(spec.plugins)],
                     sort_keys=True)
    if spec.dataset.startswith("folder:"):
        if key not in _sources:
            _sources[key] = ImageFolderSource(spec.dataset[len("folder:"):])
    elif spec.dataset.startswith("webdataset:"):
        if key not in _sources:
            _sources[key] = TarShardsSource(spec.dataset[len("webdataset:"):])
    else:
        ensure_plugins(spec)
        from ..registry import get_registry

        reg = get_registry()
        # keyed by the factory too: a replaced registry (tests, notebooks) may give the same
        # name to another dataset
        key += f"|{id(reg.entry('dataset', spec.dataset).factory)}"
        if key not in _sources:
            _sources[key] = reg.get_dataset(spec.dataset, split=spec.split, **spec.dataset_options)
    return _sources[key]


def num_samples(spec: JobSpec) -> int:
    n = len(open_dataset(spec))
    return n if spec.limit is None else min(n, spec.limit)


def read_samples(spec: JobSpec, start: int, stop: int) -> tuple[list, dict]:
    """Images ``[start, stop)`` as ``(H, W, 3)`` uint8 arrays, plus the requested fields.

    Both engines go through this function, so they see byte-identical pixels. A field that
    every sample has as a number comes back as an array; one with strings, dicts or lists
    (captions, attributes) or with gaps (``None``) comes back as a list, JSON values only,
    and is written to the shard's Parquet table (see :class:`~.store.ShardWriter`).
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
    # a field every sample has as a number is an array; other JSON values stay a list
    kept: dict[str, Any] = {}
    for f, values in fields.items():
        if values and all(isinstance(v, (int, float, bool, np.integer, np.floating)) for v in values):
            kept[f] = np.asarray(values)
        elif any(v is not None for v in values):
            try:
                kept[f] = json.loads(json.dumps(values, default=_json_scalar))
            except (TypeError, ValueError):
                continue  # not JSON values (e.g. masks as arrays): not a per-image field
    return images, kept


def _json_scalar(v):
    """numpy scalars inside sample fields (e.g. an attribute stored as np.int64)."""
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    raise TypeError(f"{type(v).__name__} is not a JSON value")


