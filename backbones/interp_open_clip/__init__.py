"""Built-in interpcore plugin: open_clip models and OpenAI CLIP names.

Registers two backbone families:

* ``open_clip:<model>`` - every architecture open_clip knows (``ViT-B-32``, ``RN50``,
  ``hf-hub:org/repo``, ...), ``pretrained=`` a tag, a checkpoint file or folder.
* ``clip:<name>`` - OpenAI's names as the ``clip`` package spells them (``ViT-B/32``,
  ``ViT-B/16``, ``RN50``, ...), OpenAI weights by default (open_clip's ``openai`` tag).

Importing this package does not import torch or open_clip: listing reads open_clip's files
(see :mod:`interp_open_clip.listing`), and loaders import :mod:`interp_open_clip.backbone`
when a model is asked for. ``from interp_open_clip import load_open_clip`` gives other
plugins the loader (that import does load torch).
"""

from __future__ import annotations

import interpcore

from .listing import list_open_clip_models, list_openai_models


def _load_open_clip(model, *, pretrained=None, device="auto", dtype=None, **options):
    from .backbone import load_open_clip

    return load_open_clip(model, pretrained, device, dtype, **options)


def _load_clip(model, *, pretrained=None, device="auto", dtype=None, **options):
    from .backbone import load_openai_clip

    return load_openai_clip(model, pretrained, device, dtype, **options)


@interpcore.hookimpl
def register_backbones(register):
    register(
        "open_clip",
        _load_open_clip,
        list_models=list_open_clip_models,
        description="OpenCLIP models (pretrained= tag, checkpoint file/folder, or hf-hub:org/repo)",
    )
    register(
        "clip",
        _load_clip,
        list_models=list_openai_models,
        description="OpenAI CLIP names (ViT-B/32, ViT-B/16, RN50, ...) with OpenAI weights",
    )


def __getattr__(name):  # lazy: keeps `import interp_open_clip` free of torch
    if name in ("load_open_clip", "load_openai_clip", "register_model_config", "OpenClipBackbone"):
        from . import backbone

        return getattr(backbone, name)
    raise AttributeError(f"module 'interp_open_clip' has no attribute {name!r}")


__all__ = ["load_open_clip", "load_openai_clip", "register_model_config", "OpenClipBackbone",
           "register_backbones"]
