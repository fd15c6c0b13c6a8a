"""Base types every plugin builds on: backbones, vocabularies, datasets, methods, results.

This module must stay importable without torch: the CLI imports it to list names. Anything
that needs torch imports it inside the function that needs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from .errors import CapabilityError, InterpError


class Capability:
    """Names of what a backbone can do. A method lists the ones it ``requires``."""

    IMAGE_ENCODER = "image_encoder"  #: ``encode_image`` gives an embedding
    TEXT_ENCODER = "text_encoder"  #: ``tokenize`` / ``encode_text`` in the same space
    VIT_RESIDUAL_STREAM = "vit_residual_stream"  #: ``residual_stream()`` (PRS)
    FEATURE_MAPS = "feature_maps"  #: spatial activations for Grad-CAM (FALCON)

    ALL = (IMAGE_ENCODER, TEXT_ENCODER, VIT_RESIDUAL_STREAM, FEATURE_MAPS)


#: The keys of ``Backbone.defaults`` / ``Dataset.defaults`` the built-in methods read. A
#: plugin may advertise other keys for its own methods. Values are registry names.
DEFAULT_KEYS = {
    "vocabulary": "concept vocabulary (SpLiCE)",
    "image_mean": "dataset whose train-split image mean centres embeddings (SpLiCE)",
    "dataset": "probe / evaluation dataset (PRS, TextSpan, FALCON, SpLiCE dataset)",
    "spurious_dataset": "group-robustness dataset with a spurious feature (PRS spurious)",
    "text_pool": "text pool for head labels (TextSpan)",
    "caption_pool": "caption pool for retrieval (FALCON)",
    "captioner": "vision-language backbone that captions crops (FALCON)",
    "crop_view": "how a Grad-CAM box is shown to the captioner: crop or in-place (FALCON)",
    "zeroshot_task": "zero-shot task name on a dataset (PRS, TextSpan)",
}

#: Roles a backbone family can advertise a default model for (``register(...,
#: default_models={role: model})``); a method asks for one with
#: :meth:`interpcore.registry.Registry.default_backbone`.
BACKBONE_ROLES = {
    "vision-language": "image and text encoders in one space (CLIP-like)",
    "vision": "an image model with feature maps (a classifier such as a ResNet)",
}


def default_for(key: str, *sources, fallback=None):
    """The first ``defaults[key]`` advertised by ``sources`` (backbones, datasets, dicts),
    else ``fallback``. ``None`` sources are skipped. Methods call this instead of naming
    models, datasets or vocabularies."""
    for src in sources:
        if src is None:
            continue
        d = src if isinstance(src, dict) else getattr(src, "defaults", None) or {}
        value = d.get(key)
        if value is not None:
            return value
    return fallback


# --------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------


class Backbone:
    """A vision (or vision-language) model behind one interface.

    Concrete backbones usually subclass :class:`interpcore.torch_backbone.TorchBackbone`,
    which implements device and dtype handling, batching and layer features on top of a
    handful of model-specific methods. The attributes and methods below are the whole
    contract the built-in methods rely on (docs/plugins.md, "The backbone contract"):

    * always: ``name``, ``pretrained``, ``capabilities``, ``device``, ``dtype``, ``defaults``,
      ``preprocess(image)``, ``to_pixels(images)``;
    * ``image_encoder``: ``embed_dim``, ``encode_image`` (no gradients) and ``forward``
      (the same computation with autograd on, for gradient-based explainers);
    * ``text_encoder``: ``tokenize``, ``encode_text`` (same space and size as images);
    * ``feature_maps``: ``default_layer``, ``feature_layers()``, ``module(layer)``,
      ``features(images, layer)``, ``forward_features(pixels, layer)`` (autograd on),
      ``gradcam_target_layers()`` and ``gradcam_reshape_transform()``;
    * ``vit_residual_stream``: ``residual_stream()`` (a :class:`ViTResidualStream`).
    """

    name: str = "?"  #: full registry name, e.g. ``open_clip:ViT-B-32``
    pretrained: str | None = None  #: weights tag, file or folder the model was loaded from
    capabilities: frozenset[str] = frozenset()
    embed_dim: int | None = None  #: size of ``encode_image`` / ``encode_text`` outputs
    device = None  #: ``torch.device`` the model runs on (``to_pixels`` moves inputs there)
    dtype = None  #: ``torch.dtype`` of the model's weights and of ``to_pixels``' output
    default_layer: str | None = None  #: layer ``features()`` uses by default (pooled, (N, F))
    #: What this backbone is used with when the user names nothing (see :data:`DEFAULT_KEYS`).
    #: The registry fills it from the family's ``register(..., defaults=...)``; a backbone
    #: may set its own entries, which win over the family's.
    defaults: dict = {}

    # -- the interface (TorchBackbone implements these) --------------------------------
    def preprocess(self, image):  # PIL image or path -> (C, H, W) float tensor
        raise NotImplementedError

    def to_pixels(self, images):
        """A ``(N, C, H, W)`` batch on :attr:`device` / :attr:`dtype` from paths, PIL images,
        ``(C, H, W)`` / ``(N, C, H, W)`` tensors or lists of them (preprocessed here)."""
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]):
        raise CapabilityError(self.name, Capability.TEXT_ENCODER, "tokenize")

    def encode_image(self, images, *, normalize: bool = False, batch_size: int = 64):
        raise CapabilityError(self.name, Capability.IMAGE_ENCODER, "encode_image")

    def encode_text(self, texts, *, normalize: bool = False, batch_size: int = 256):
        raise CapabilityError(self.name, Capability.TEXT_ENCODER, "encode_text")

    def forward(self, pixels):
        """The image forward pass with autograd on (``encode_image`` runs without it): for
        explainers that need gradients. ``pixels`` come from :meth:`to_pixels`; returns the
        ``(N, embed_dim)`` embedding (a backbone without an image encoder: the model's own
        output, e.g. logits)."""
        raise CapabilityError(self.name, Capability.IMAGE_ENCODER, "forward")

    def forward_features(self, pixels, layer: str | None = None):
        """The activations of ``layer`` (default :attr:`default_layer`) on a pixel batch,
        with autograd on and not pooled: ``(N, C, H, W)`` maps, ``(N, T, C)`` tokens or
        ``(N, F)`` vectors, as the layer gives them."""
        raise CapabilityError(self.name, Capability.FEATURE_MAPS, "forward_features")

    def features(self, images, layer: str | None = None, *, batch_size: int = 64):
        raise NotImplementedError

    def feature_layers(self) -> list[str]:
        return []

    def gradcam_target_layers(self) -> list:
        raise CapabilityError(self.name, Capability.FEATURE_MAPS, "gradcam_target_layers")

    def gradcam_reshape_transform(self):
        """pytorch-grad-cam's ``reshape_transform`` for the target layers (None: CNN maps)."""
        return None

    def residual_stream(self) -> ViTResidualStream:
        raise CapabilityError(self.name, Capability.VIT_RESIDUAL_STREAM, "residual_stream")

    # -- helpers -------------------------------------------------------------------------
    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def cache_key(self) -> str:
        """A string that changes whenever the weights change (used to key caches)."""
        return f"{self.name}|{self.pretrained}"

    def __repr__(self) -> str:
        caps = ",".join(sorted(self.capabilities))
        return f"<{type(self).__name__} {self.name} pretrained={self.pretrained} [{caps}]>"


class ViTResidualStream:
    """Exact access to a pre-LayerNorm ViT image tower with class-token pooling.

    The tower computes, for pixels ``p``::

        x = embed(p)                                  # (N, T, width), T = 1 + patches
        for b in blocks:                              # b = block(i)
            x = x + b.ls_1(attention(b, b.ln_1(x)))
            x = x + b.ls_2(b.mlp(b.ln_2(x)))
        z = post(x[:, 0])                             # == backbone.encode_image(p)

    with ``attention(b, y) = out_proj(concat_h softmax(q_h k_h^T * b.scale) v_h)`` where
    ``q, k, v = b.qkv(y)`` are ``(N, heads, T, head_dim)`` and ``out_proj(u) = u @
    b.out_proj_weight.T + b.out_proj_bias``. ``ls_1`` / ``ls_2`` are per-channel layer
    scales (identity when the model has none) and therefore linear.

    ``post`` is ``LayerNorm(ln_post_weight, ln_post_bias, ln_post_eps)`` followed by
    ``@ proj`` (``proj`` may be ``None`` for no projection). Methods such as PRS use these
    parts to compute every component's direct contribution; :meth:`forward` is the
    reference forward pass built from the same parts.
    """

    num_layers: int
    num_heads: int
    width: int
    head_dim: int
    embed_dim: int
    grid_size: tuple[int, int]
    ln_post_weight: Any
    ln_post_bias: Any
    ln_post_eps: float
    proj: Any  # (width, embed_dim) tensor or None

    def embed(self, pixels):
        raise NotImplementedError

    def block(self, index: int) -> ViTBlockParts:
        raise NotImplementedError

    def post(self, x_cls):
        import torch.nn.functional as F

        y = F.layer_norm(
            x_cls, (self.width,), self.ln_post_weight, self.ln_post_bias, self.ln_post_eps
        )
        return y if self.proj is None else y @ self.proj

    def attention(self, index: int, y):
        """Multi-head attention of block ``index`` on normalized input ``y``."""
        b = self.block(index)
        q, k, v = b.qkv(y)
        attn = (q @ k.transpose(-1, -2) * b.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(y.shape[0], y.shape[1], -1)
        return out @ b.out_proj_weight.T + b.out_proj_bias

    def forward(self, pixels):
        """Reference forward pass from the parts; equals the backbone's encode_image."""
        x = self.embed(pixels)
        for i in range(self.num_layers):
            b = self.block(i)
            x = x + b.ls_1(self.attention(i, b.ln_1(x)))
            x = x + b.ls_2(b.mlp(b.ln_2(x)))
        return self.post(x[:, 0])


@dataclasses.dataclass
class ViTBlockParts:
    """The pieces of one transformer block, as callables and tensors (see ViTResidualStream)."""

    ln_1: Any
    qkv: Any
    scale: float
    out_proj_weight: Any  # (width, heads * head_dim)
    out_proj_bias: Any  # (width,)
    ln_2: Any
    mlp: Any
    ls_1: Any = staticmethod(lambda x: x)
    ls_2: Any = staticmethod(lambda x: x)
    #: Optional access to the MLP's neurons (second-order neuron lenses need it):
    #: ``mlp_hidden(y)`` ``(N, T, width)`` -> ``(N, T, hidden)``, the neurons' activations after
    #: the nonlinearity, and ``mlp_out_weight`` ``(width, hidden)`` / ``mlp_out_bias``
    #: ``(width,)`` with ``mlp(y) == mlp_hidden(y) @ mlp_out_weight.T + mlp_out_bias``.
    #: ``None`` when the stream does not expose them.
    mlp_hidden: Any = None
    mlp_out_weight: Any = None
    mlp_out_bias: Any = None


# --------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Vocabulary:
    """An ordered list of texts (concepts, a text pool, a caption pool)."""

    name: str
    concepts: list[str]
    source: str = ""  #: where the texts came from (URL, file, "generated")
    description: str = ""
    #: Which end of ``concepts`` holds the most frequent entries, i.e. what ``size=k`` keeps:
    #: ``"first"`` (TextSpan's pools, custom lists) or ``"last"`` (SpLiCE's files, sorted
    #: from least to most frequent).
    keep: str = "first"

    def __post_init__(self):
        if not isinstance(self.concepts, list):
            self.concepts = list(self.concepts)

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self):
        return iter(self.concepts)

    def __getitem__(self, i):
        return self.concepts[i]

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for c in self.concepts:
            h.update(c.encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


class Dataset:
    """A map-style dataset of samples.

    ``dataset[i]`` returns a dict with at least ``"image"`` (a PIL RGB image) and, where the
    dataset has them, ``"label"`` (int index into :attr:`classes`), ``"mask"`` (numpy
    ``(H, W)`` int array, 0 = background, k = object k), ``"caption"``, ``"attributes"``
    (dict) and ``"group"`` (int, for group-robustness datasets).
    """

    name: str = "?"
    classes: list[str] | None = None
    #: What methods use with this dataset when the user names nothing (see
    #: :data:`DEFAULT_KEYS`); a dataset's entry wins over the backbone's.
    defaults: dict = {}

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        raise NotImplementedError

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def zeroshot_tasks(self, templates=None) -> dict:
        """The zero-shot tasks this dataset offers, by name (``ZeroShotTask`` values).

        The base class offers ``label`` when the dataset has :attr:`classes` (class names
        put into OpenAI's 80 ImageNet templates, or ``templates``). Datasets with more labels
        per sample (attributes) override this and add one task per attribute; the task a
        method uses by default is ``defaults["zeroshot_task"]``, else ``label``.
        """
        from .zeroshot import ZeroShotTask, templates_from

        if not self.classes:
            return {}
        names = list(self.classes)
        return {"label": ZeroShotTask("label", names, names, templates_from(templates))}

    def zeroshot_task(self, name: str | None = None, templates=None):
        """One task by name (default: the dataset's advertised one, else ``label``)."""
        tasks = self.zeroshot_tasks(templates)
        name = name or self.defaults.get("zeroshot_task") or "label"
        if name not in tasks:
            have = ", ".join(tasks) or "none (the dataset has no class names)"
            raise InterpError(f"no zero-shot task '{name}' on dataset '{self.name}'; "
                              f"available: {have}")
        return tasks[name]

    def check_index(self, index: int) -> int:
        """``index`` with negative values counted from the end; IndexError when out of range."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        return index


# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------


class Method:
    """Common part of decomposers and explainers: a backbone plus options.

    Subclasses set ``requires`` to the capabilities they need; constructing a method on a
    backbone without them raises :class:`CapabilityError` naming both.
    """

    name: ClassVar[str] = "?"
    requires: ClassVar[Iterable[str]] = ()

    def __init__(self, backbone: Backbone, **options):
        check_capabilities(self.name, backbone, self.requires)
        self.backbone = backbone
        self.options = options

    def __init_subclass__(cls, **kwargs):
        """Options are checked at construction: an unknown one names the valid ones, and one
        annotated with ``bool`` / ``int`` / ``float`` / ``str`` / ``Literal[...]`` (or a union
        of them, e.g. ``int | None``) must have that type."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_checks_options", False):
            return
        import functools
        import inspect

        sig = inspect.signature(init)
        kinds: dict | None = None  # option name -> checkable annotation, resolved on first use

        @functools.wraps(init)
        def checked(self, *args, **options):
            nonlocal kinds
            try:
                bound = sig.bind(self, *args, **options)
            except TypeError:
                _raise_bad_options(type(self), sig, args, options)
            if kinds is None:
                kinds = _checkable_annotations(init, sig)
            for name, value in list(bound.arguments.items())[2:]:
                if name in kinds:
                    _check_option_type(type(self), name, value, kinds[name])
            return init(self, *args, **options)

        checked._checks_options = True
        cls.__init__ = checked


class Decomposer(Method):
    """Splits a representation into parts; the public verb is :meth:`decompose`."""

    def decompose(self, inputs, **kwargs):
        raise NotImplementedError


class Explainer(Method):
    """Describes what a model or its parts respond to; the public verb is :meth:`explain`."""

    def explain(self, inputs=None, **kwargs):
        raise NotImplementedError


def _checkable_annotations(init, sig) -> dict:
    """The options whose annotations are built from ``bool``, ``int``, ``float``, ``str``,
    ``None`` and ``Literal[...]`` (alone or in a union): those are type-checked at
    construction. Other annotations (classes, containers, unresolvable names) are left to the
    method."""
    import typing

    hints = {}
    for name, prm in sig.parameters.items():
        if prm.annotation is prm.empty:
            continue
        ann = prm.annotation
        if isinstance(ann, str):  # ``from __future__ import annotations``
            try:
                ann = eval(ann, dict(vars(typing)), dict(init.__globals__))  # noqa: S307
            except Exception:  # a name only importable under TYPE_CHECKING: not checked
                continue
        if _simple(ann):
            hints[name] = ann
    return hints


_SCALARS = (bool, int, float, str, type(None))


def _simple(ann) -> bool:
    import typing

    if ann in _SCALARS or ann is None:
        return True
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return all(_simple(a) for a in typing.get_args(ann))
    return False


def _matches(value, ann) -> bool:
    import numbers
    import typing

    if ann is None or ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool) or type(value).__name__ == "bool_"
    if ann is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if typing.get_origin(ann) is typing.Literal:
        return value in typing.get_args(ann)
    return any(_matches(value, a) for a in typing.get_args(ann))


def _describe(ann) -> str:
    import typing

    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "None"}
    if ann in names or ann is None:
        return names.get(ann, "None")
    if typing.get_origin(ann) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    return " or ".join(_describe(a) for a in typing.get_args(ann))


def _check_option_type(cls, name: str, value, ann) -> None:
    if not _matches(value, ann):
        raise InterpError(f"option '{name}' of method '{getattr(cls, 'name', '?')}' must be "
                          f"{_describe(ann)}, got {value!r}")


def _raise_bad_options(cls, sig, args, options) -> None:
    from .errors import close_matches

    valid = [n for n, prm in sig.parameters.items()
             if n != "self" and prm.kind in (prm.KEYWORD_ONLY, prm.POSITIONAL_OR_KEYWORD)][1:]
    what = f"{cls.__name__} (method '{getattr(cls, 'name', '?')}')"
    unknown = [k for k in options if k not in sig.parameters]
    if unknown:
        near = close_matches(unknown[0], valid)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise InterpError(f"unknown option '{unknown[0]}' for {what}.{hint} Valid options: "
                          f"{', '.join(valid) or 'none'}")
    raise InterpError(f"{what} takes the backbone and then options by name "
                      f"({', '.join(valid) or 'none'}); got {len(args)} positional argument(s)")


def check_capabilities(method: str, backbone: Backbone, requires: Iterable[str]) -> None:
    missing = [c for c in requires if c not in backbone.capabilities]
    if missing:
        raise CapabilityError(backbone.name, missing[0], f"method '{method}'")


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verification:
    """How a result checks itself: one figure under one name across methods.

    ``name`` says what was measured (e.g. "max relative error of the sum of contributions",
    "largest relative duality gap"), ``value`` the figure, ``tolerance`` the bound it must
    stay under, ``passed`` whether it does.
    """

    name: str
    value: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.value <= self.tolerance)

    def __str__(self) -> str:
        mark = "ok" if self.passed else "FAILED"
        return f"{self.name}: {self.value:.2e} (tolerance {self.tolerance:g}) {mark}"


class Result:
    """Base for method results: small dataclasses that print and serialize.

    Every result has :meth:`to_dict` / :meth:`to_json`, :meth:`to_arrays` (the numeric
    fields, which the job runner stores), :meth:`save` / :meth:`load` (a folder holding
    ``result.json`` and one ``.npy`` per array field) and :attr:`verification` (how the
    result checks itself, or ``None`` for a method with nothing to verify). Subclasses are
    dataclasses; tensors and arrays in fields are converted to lists by :meth:`to_dict`.
    """

    #: file names inside a saved result folder
    JSON_FILE: ClassVar[str] = "result.json"

    def to_dict(self) -> dict:
        if not dataclasses.is_dataclass(self):
            raise InterpError(f"{type(self).__name__} is not a dataclass")
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    @property
    def verification(self) -> Verification | None:
        """The result's own check (see :class:`Verification`); ``None`` when it has none."""
        return None

    def to_arrays(self) -> dict:
        """The fields that are arrays or tensors, as numpy arrays by field name."""
        import numpy as np

        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            if isinstance(value, np.ndarray):
                out[f.name] = value
        return out

    def save(self, folder) -> "Path":
        """Write the result into ``folder`` (created): array fields as ``NAME.npy``, the
        rest as ``result.json``; every file written atomically. Returns the folder."""
        import numpy as np
        from pathlib import Path

        from .cache import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = self.to_arrays()
        for name, arr in arrays.items():
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
        # the fields themselves, not to_dict(): a result may print a summary there
        rest = {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in arrays}
        doc = {"type": f"{type(self).__module__}:{type(self).__qualname__}",
               "arrays": sorted(arrays), "fields": rest}
        with atomic_path(folder / self.JSON_FILE) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder):
        """Read a result written by :meth:`save` (array fields come back as numpy arrays)."""
        import numpy as np
        from pathlib import Path

        folder = Path(folder)
        path = folder / cls.JSON_FILE
        if not path.is_file():
            raise InterpError(f"{folder} holds no saved result ({cls.JSON_FILE} is missing)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InterpError(f"{path} is not valid JSON ({exc})") from None
        want = f"{cls.__module__}:{cls.__qualname__}"
        if cls is not Result and doc.get("type") != want:
            raise InterpError(f"{folder} holds a {doc.get('type')}, not a {want}")
        values = dict(doc.get("fields", {}))
        hints = _field_types(cls)
        values = {k: _rebuild(v, hints.get(k)) for k, v in values.items()}
        for name in doc.get("arrays", []):
            arr = np.load(folder / f"{name}.npy", allow_pickle=False)
            values[name] = _tensor_if_annotated(arr, hints.get(name))
        return cls(**values)

    def _repr_html_(self) -> str:
        """Jupyter's view: a compact table of the fields, the ``figure()`` if the result has
        one, and the printout (see :mod:`interpcore.notebook`)."""
        from .notebook import result_html

        return result_html(self)


def _field_types(cls) -> dict:
    """A dataclass's field annotations, resolved where they can be (``{}`` otherwise)."""
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name only importable under TYPE_CHECKING: fields come back as JSON
        return {}


def _tensor_if_annotated(arr, ann):
    """A loaded array as a torch tensor when its field is annotated ``torch.Tensor`` (alone or
    in a union), else as it is."""
    import sys
    import typing

    torch = sys.modules.get("torch")  # a Tensor annotation resolved: torch is imported
    if torch is None or ann is None:
        return arr
    if ann is torch.Tensor or torch.Tensor in typing.get_args(ann):
        return torch.from_numpy(arr)
    return arr


def _rebuild(value, ann):
    """JSON data back into the annotated type: nested dataclasses, and tuples inside lists
    (``list[GroupExplanation]``, ``list[tuple[str, float]]``); anything else as it is."""
    import typing

    if ann is None or value is None:
        return value
    if dataclasses.is_dataclass(ann) and isinstance(value, dict):
        hints = _field_types(ann)
        return ann(**{k: _rebuild(v, hints.get(k)) for k, v in value.items()})
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _rebuild(value, inner[0]) if len(inner) == 1 else value
    if origin is list and args and isinstance(value, list):
        return [_rebuild(v, args[0]) for v in value]
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_rebuild(v, args[0]) for v in value)
        if len(args) == len(value):
            return tuple(_rebuild(v, a) for v, a in zip(value, args))
        return tuple(value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _rebuild(v, args[1]) for k, v in value.items()}
    return value


def to_jsonable(value):
    """Convert tensors, arrays, paths and nested containers to JSON-friendly values."""
    if isinstance(value, Result):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
