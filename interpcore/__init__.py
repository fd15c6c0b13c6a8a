"""interpcore: interpret vision and vision-language models through plugins.

The core knows no model, vocabulary, dataset or method by name: plugins register them
(see :mod:`interpcore.hookspecs`). Importing this package does not import torch.
"""

from __future__ import annotations

from .base import (
    BACKBONE_ROLES,
    DEFAULT_KEYS,
    Backbone,
    Capability,
    Dataset,
    Decomposer,
    Explainer,
    Method,
    Result,
    Verification,
    ViTBlockParts,
    ViTResidualStream,
    Vocabulary,
    default_for,
)
from .errors import (
    CapabilityError,
    InterpError,
    OfflineError,
    PluginError,
    UnknownNameError,
)
from . import lazy
from .hookspecs import hookimpl
from .registry import get_registry

__version__ = "0.1.0"


def get_backbone(name: str, pretrained=None, device: str = "auto", dtype=None, **options) -> Backbone:
    """Load a backbone by ``"library:model"`` name, e.g. ``open_clip:ViT-B-32``."""
    return get_registry().get_backbone(name, pretrained=pretrained, device=device, dtype=dtype, **options)


def default_backbone(role: str) -> str:
    """The backbone name advertised as the default for a role (``vision-language``, ``vision``)."""
    return get_registry().default_backbone(role)


def list_backbones(pattern: str = "*"):
    """Backbones matching a wildcard pattern, as ``BackboneInfo(name, pretrained, ...)``."""
    return get_registry().list_backbones(pattern)


def get_vocabulary(name, size: int | None = None, **options) -> Vocabulary:
    """A vocabulary by name; ``size=k`` keeps the k most frequent entries where that applies."""
    return get_registry().get_vocabulary(name, size=size, **options)


def list_vocabularies(pattern: str = "*") -> list[str]:
    return get_registry().names("vocabulary", pattern)


def get_decomposer(name: str, backbone=None, **options) -> Decomposer:
    """A decomposer (e.g. ``splice``, ``prs``) on a backbone object or name."""
    return get_registry().get_decomposer(name, backbone, **options)


def get_explainer(name: str, backbone=None, **options) -> Explainer:
    """An explainer (e.g. ``textspan``, ``falcon``) on a backbone object or name."""
    return get_registry().get_explainer(name, backbone, **options)


def list_methods(pattern: str = "*") -> dict[str, list[str]]:
    reg = get_registry()
    return {"decomposer": reg.names("decomposer", pattern), "explainer": reg.names("explainer", pattern)}


def get_dataset(name: str, split: str = "test", **options) -> Dataset:
    return get_registry().get_dataset(name, split=split, **options)


def list_datasets(pattern: str = "*") -> list[str]:
    return get_registry().names("dataset", pattern)


# Torch-backed helpers, imported on first use so that ``import interpcore`` stays light.
__getattr__, __dir__ = lazy.attach(__name__, {
    "concepts": ["concept_dictionary", "image_mean", "text_embeddings"],
    "zeroshot": ["classifier_weights"],
})[:2]


__all__ = [
    "BACKBONE_ROLES", "DEFAULT_KEYS", "default_backbone", "default_for",
    "classifier_weights", "concept_dictionary", "image_mean", "text_embeddings",
    "Backbone", "Capability", "CapabilityError", "Dataset", "Decomposer", "Explainer",
    "InterpError", "Method", "OfflineError", "PluginError", "Result", "UnknownNameError",
    "Verification",
    "ViTBlockParts", "ViTResidualStream", "Vocabulary", "get_backbone", "get_dataset",
    "get_decomposer", "get_explainer", "get_registry", "get_vocabulary", "hookimpl",
    "list_backbones", "list_datasets", "list_methods", "list_vocabularies",
]
