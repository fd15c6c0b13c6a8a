"""Reading a job's samples from a registered dataset, including the two the core registers,
``folder:DIR`` and ``webdataset:PATTERN``; :func:`read_samples` is what every engine reads
pixels through."""

from __future__ import annotations

import bisect
import contextlib
import glob
import itertools
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..base import Dataset
from .spec import EngineError, JobSpec, import_object


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")


class ImageFolderSource(Dataset):
    """Images under a folder, sorted by path; labels from first-level subfolders."""

    name = "folder"

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


def _webdataset():
    try:
        import webdataset
    except ImportError:
        raise EngineError("webdataset: sources need the webdataset library, which is not "
                          "installed: pip install webdataset") from None
    return webdataset


def expand_urls(pattern: str) -> list[str]:
    """``a.tar,b-{000..009}.tar,c-*.tar`` -> the shard URLs, in that order: comma-separated
    parts, each brace-expanded (webdataset's notation) and, where it is a local glob, sorted."""
    import braceexpand  # a dependency of webdataset

    urls: list[str] = []
    for part in filter(None, (x.strip() for x in pattern.split(","))):
        for url in braceexpand.braceexpand(part):
            if "://" in url or url.startswith("pipe:"):
                urls.append(url)  # webdataset's gopen opens these; nothing to look up here
                continue
            url = os.path.expanduser(url)
            if not glob.has_magic(url) and not os.path.isfile(url):
                raise EngineError(f"tar shard not found: {url} (named in '{pattern}')")
            urls.extend(sorted(glob.glob(url)) if glob.has_magic(url) else [url])
    if not urls:
        raise EngineError(f"no tar shards match '{pattern}'")
    return urls


class WebDatasetSource(Dataset):
    """WebDataset ``.tar`` shards, read with the ``webdataset`` library: its tar iterators
    group members sharing a key (``dir/key.ext``) into a sample and its decoders turn the
    image into a PIL RGB image, ``.cls`` into the ``label`` and ``.txt`` into the ``caption``.

    webdataset streams and keeps no index, so opening the source reads every tar once to
    count its samples (nothing is decoded); ``dataset[i]`` then streams from a cursor in the
    tar holding sample ``i``, which moves forward across consecutive indices (a job's shard
    is a run of them) and restarts at the tar's start only when asked for an earlier sample.
    Samples without an image are skipped; :attr:`skipped` counts them.
    """

    name = "webdataset"

    def __init__(self, urls: str):
        wds = _webdataset()
        self.pattern = urls
        self.urls = expand_urls(urls)
        self._image_exts = set(wds.autodecode.IMAGE_EXTENSIONS)
        self.skipped = 0
        self.counts = [sum(1 for _ in self._samples(t, count_skipped=True))
                       for t in range(len(self.urls))]
        self.starts = [0, *itertools.accumulate(self.counts)]  # index of each tar's first sample
        if not self.starts[-1]:
            raise EngineError(f"the tar shards matching '{urls}' contain no images")
        if self.skipped:
            warnings.warn(f"webdataset '{urls}': {self.skipped} sample(s) without an image "
                          "skipped", stacklevel=2)
        self.classes = None
        self._cursor: tuple | None = None  # (tar index, next position in it, sample iterator)

    def _image_key(self, sample: dict) -> str | None:
        return next((k for k in sample if not k.startswith("__")
                     and k.rsplit(".", 1)[-1] in self._image_exts), None)

    def _samples(self, t: int, count_skipped: bool = False):
        """Tar ``t``'s undecoded samples that have an image, in the tar's order."""
        import tarfile

        wds = _webdataset()
        url = self.urls[t]
        try:
            # opened here rather than by tarfile_samples, which leaves the file to the collector
            with contextlib.closing(wds.gopen(url)) as stream:
                files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}])
                for sample in wds.tariterators.group_by_keys(files):
                    if self._image_key(sample) is not None:
                        yield sample
                    elif count_skipped:
                        self.skipped += 1
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            why = " ".join(str(exc.args[0] if exc.args else type(exc).__name__).split())
            raise EngineError(f"{url} is not a readable tar shard ({why})") from None

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} of a {len(self)}-sample webdataset")
        t = bisect.bisect_right(self.starts, i) - 1
        pos = i - self.starts[t]
        if self._cursor is None or self._cursor[0] != t or self._cursor[1] > pos:
            if self._cursor is not None:
                self._cursor[2].close()  # closes that tar's file now, not when collected
            self._cursor = (t, 0, self._samples(t))
        _, at, samples = self._cursor
        for _ in range(pos - at):  # skipped over without decoding
            next(samples)
        raw = next(samples)
        self._cursor = (t, pos + 1, samples)
        return self._decode(raw, i)

    def _decode(self, raw: dict, i: int) -> dict:
        wds = _webdataset()
        key = self._image_key(raw)
        # only the fields used are decoded: webdataset's default handlers would also unpickle
        decoder = wds.autodecode.Decoder([wds.autodecode.imagehandler("pilrgb")],
                                         only=[key, "cls", "txt"])
        try:
            decoded = decoder(raw)
        except wds.autodecode.DecodingError as exc:
            cause = exc.__cause__
            raise EngineError(f"{raw['__url__']}:{raw['__key__']}.{exc.k} cannot be decoded "
                              f"({type(cause).__name__}: {cause})") from None
        sample: dict[str, Any] = {"image": decoded[key], "index": i, "key": raw["__key__"]}
        if "cls" in decoded:
            sample["label"] = decoded["cls"]
        if "txt" in decoded:
            sample["caption"] = decoded["txt"].strip()
        return sample

    def __getstate__(self):  # an open tar stream does not travel between processes
        state = dict(self.__dict__)
        state["_cursor"] = None
        return state


def _folder_dataset(split: str = "test", location: str | None = None):
    if not location:
        raise EngineError("the 'folder' dataset needs a folder: folder:DIR")
    return ImageFolderSource(location)


def _webdataset_dataset(split: str = "test", location: str | None = None):
    if not location:
        raise EngineError("the 'webdataset' dataset needs shard paths: webdataset:PATTERN")
    return WebDatasetSource(location)


def register_core_datasets(register) -> None:
    """The datasets interpcore registers itself (by the registry, before any plugin's
    ``register_datasets`` hook): ``folder:DIR`` and ``webdataset:PATTERN``."""
    register("folder", _folder_dataset, description="folder:DIR - the images under DIR sorted "
             "by path, one class per first-level subfolder when there are subfolders")
    register("webdataset", _webdataset_dataset, description="webdataset:PATTERN - WebDataset "
             ".tar shards (comma-separated, {000..009} and * patterns), read with webdataset")


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
    ensure_plugins(spec)
    from ..registry import get_registry

    reg = get_registry()
    key = json.dumps([spec.dataset, spec.split, spec.dataset_options, list(spec.plugins)],
                     sort_keys=True)
    # keyed by the factory too: a replaced registry (tests, notebooks) may give the same name
    # to another dataset
    key += f"|{id(reg.dataset_entry(spec.dataset)[0].factory)}"
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


