"""What a job is: :class:`JobSpec` (everything that determines its output, as names and
JSON-able options), its shards, and importing the objects a spec names by path."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from collections.abc import Callable, Mapping

from ..errors import InterpError


FORMAT_VERSION = 1
INPUTS = ("pixels", "images", "embeddings")


class EngineError(InterpError):
    """A job that cannot run, or an output folder that does not match its job."""


@dataclasses.dataclass
class JobSpec:
    """Everything that determines a job's output, as names and JSON-able options.

    ``dataset`` is a registered dataset name, ``folder:DIR`` (an image folder; one class per
    first-level subfolder when there are subfolders) or ``webdataset:PATTERN`` (WebDataset
    ``.tar`` shards read with the webdataset library: comma-separated, brace-expanded and
    globbed; members sharing a key form one sample, ``.cls`` gives the label). ``method`` is a registered decomposer or explainer
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




def dataset_source(data, split: str = "test") -> dict | None:
    """``{"dataset", "split", "dataset_options"}`` naming ``data`` for a :class:`JobSpec`, or
    ``None`` when it cannot be named: a registered name (with ``split``), or a dataset that
    :func:`interpcore.get_dataset` returned (it records them in ``job_source``). Datasets
    built by hand, DataLoaders and tensors have no name a worker could open them by."""
    if isinstance(data, str):
        return {"dataset": data, "split": split, "dataset_options": {}}
    origin = getattr(data, "job_source", None)
    if not isinstance(origin, Mapping) or not isinstance(origin.get("dataset"), str):
        return None
    return {"dataset": origin["dataset"], "split": str(origin.get("split", split)),
            "dataset_options": dict(origin.get("dataset_options") or {})}


def backbone_source(backbone) -> dict | None:
    """``{"backbone", "backbone_options"}`` naming a loaded backbone for a :class:`JobSpec`
    (its registry name, and its weights when it records them), or ``None`` when its family is
    not registered (a backbone object built by hand)."""
    name = getattr(backbone, "name", None)
    if not isinstance(name, str) or ":" not in name:
        return None
    from ..registry import get_registry

    try:
        get_registry().entry("backbone", name.partition(":")[0])
    except InterpError:
        return None
    pretrained = getattr(backbone, "pretrained", None)
    options = {"pretrained": str(pretrained)} if pretrained is not None else {}
    return {"backbone": name, "backbone_options": options}
