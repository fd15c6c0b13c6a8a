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

from .listing import OPENAI_NAMES, list_open_clip_models, list_openai_models


def _refuse_unlisted(prefix, model, listed, lister) -> None:
    """A misspelt model name is refused before torch is imported (seconds sooner). Skipped
    once open_clip is imported, where code may have registered its own configurations."""
    import sys

    if "open_clip" in sys.modules:
        return
    try:
        names = {m if isinstance(m, str) else m[0] for m in lister()}
    except Exception:  # noqa: BLE001 - the listing is a shortcut; the loader checks again
        return
    if names and listed not in names:
        raise interpcore.get_registry().unknown_model(prefix, model)


def _load_open_clip(model, *, pretrained=None, device="auto", dtype=None, **options):
    if not model.startswith("hf-hub:") and options.get("model_config") is None:
        # (a model_config given in the call defines an architecture no listing knows)
        _refuse_unlisted("open_clip", model, model.replace("/", "-"), list_open_clip_models)
    from .backbone import load_open_clip

    return load_open_clip(model, pretrained, device, dtype, **options)


def _load_clip(model, *, pretrained=None, device="auto", dtype=None, **options):
    _refuse_unlisted("clip", model, model, lambda: list(OPENAI_NAMES) + list(OPENAI_NAMES.values()))
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


# the loaders import torch: resolved on first use, so `import interp_open_clip` stays free of it
__getattr__, __dir__, __all__ = interpcore.lazy.attach(
    __name__,
    {"backbone": ["load_open_clip", "load_openai_clip", "register_model_config", "OpenClipBackbone"]},
    eager=["register_backbones"],
)
