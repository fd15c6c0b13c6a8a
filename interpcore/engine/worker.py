"""Computing a shard: :class:`ShardWorker` builds the backbone and method from the spec's
names, runs them batch by batch, and turns results into per-image arrays (:func:`to_arrays`,
the *array protocol* described in :mod:`interpcore.engine`)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence

from .sources import ensure_plugins, read_samples
from .spec import EngineError, JobSpec, Shard, import_object


_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


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

    One worker holds one model; the Ray engine runs one per actor. ``backbone`` / ``method``:
    objects already built for this spec in the calling process (the local engine reuses a
    command's model instead of loading a second copy); the spec still names them, for the
    job's hash and for other engines.
    """

    def __init__(self, spec: JobSpec | Mapping, device: str = "auto", threads: int | None = None,
                 backbone=None, method=None):
        """``backbone`` / ``method``: objects already built in this process, used instead of
        building them from the spec's names (the caller vouches that they match the spec)."""
        self.spec = spec if isinstance(spec, JobSpec) else JobSpec.from_dict(spec)
        self.device = device
        self.threads = threads
        self._backbone = backbone
        self._method = method
        self._ready = False
        self._adapter = None
        self.shards_done = 0

    def _setup(self):
        if self._ready:
            return
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        ensure_plugins(self.spec)
        from ..registry import get_registry

        reg = get_registry()
        if self._backbone is None:
            opts = dict(self.spec.backbone_options)
            self._backbone = reg.get_backbone(self.spec.backbone, device=self.device, **opts)
        if self.spec.method and self._method is None:
            getter = reg.get_decomposer if self.spec.kind == "decomposer" else reg.get_explainer
            self._method = getter(self.spec.method, self._backbone, **self.spec.method_options)
        self._check_method()
        if self.spec.adapter:
            self._adapter = import_object(self.spec.adapter)
        self._ready = True

    def _check_method(self):
        if self.spec.method and not callable(getattr(self._method, self.spec.verb_name, None)):
            raise EngineError(
                f"{self.spec.kind} '{self.spec.method}' has no method '{self.spec.verb_name}()'"
            )

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
                if "layer" in spec.call_options:  # None: the backbone's default feature layer
                    out = bb.features(pixels, spec.call_options["layer"], batch_size=len(images))
                    return to_arrays({"features": out}, len(images), self._adapter)
                z = bb.encode_image(pixels, batch_size=len(images),
                                    normalize=bool(spec.call_options.get("normalize", False)))
                return to_arrays({"embedding": z}, len(images), self._adapter)
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
            if isinstance(v, list):  # JSON values (captions, attributes): table columns only
                continue
            out[k] = np.asarray(v)
        self.shards_done += 1
        return out

    def compute_shard(self, shard: Shard) -> dict:
        images, fields = read_samples(self.spec, shard.start, shard.stop)
        return self.compute(images, fields)

    def write_shard(self, shard: Shard, writer, samples: tuple | None = None, **info) -> dict:
        """Compute a shard and write its files through ``writer`` (a
        :class:`~interpcore.engine.store.ShardWriter`), here in the worker; return its record.
        ``samples``: the shard's ``(images, fields)`` when they were read elsewhere."""
        t0 = time.perf_counter()
        images, fields = samples if samples is not None else read_samples(
            self.spec, shard.start, shard.stop)
        arrays = self.compute(images, fields)
        columns = {k: v for k, v in (fields or {}).items() if isinstance(v, list)}
        return writer.write(shard, arrays, {**info, "seconds": round(time.perf_counter() - t0, 4)},
                            columns=columns)


