"""Built-in interpcore plugin: image classifiers from timm (``timm:<model>``) and torchvision
(``torchvision:<name>``), for methods that need no text tower (FALCON, Grad-CAM).

Listing parses timm's source without importing it (see :mod:`interp_timm.listing`); loaders
import torch, timm and torchvision only when a model is asked for.
"""

from __future__ import annotations

import interpcore

from .listing import list_timm_models, list_torchvision_models


def _load_timm(model, *, pretrained=None, device="auto", dtype=None, **options):
    import sys

    # a misspelt architecture is refused before torch is imported; once timm is imported,
    # code may have registered its own models, and timm's own check decides
    if "timm" not in sys.modules and not model.startswith(("hf-hub:", "hf_hub:")):
        try:
            names = {m if isinstance(m, str) else m[0] for m in list_timm_models()}
        except Exception:  # noqa: BLE001 - the listing is a shortcut; the loader checks again
            names = set()
        if names and model.split(".", 1)[0] not in names:
            raise interpcore.get_registry().unknown_model("timm", model)
    from .backbone import load_timm

    return load_timm(model, pretrained, device, dtype, **options)


def _load_torchvision(model, *, pretrained=None, device="auto", dtype=None, **options):
    from .backbone import load_torchvision

    return load_torchvision(model, pretrained, device, dtype, **options)


@interpcore.hookimpl
def register_backbones(register):
    register(
        "timm",
        _load_timm,
        list_models=list_timm_models,
        description="timm image models (pretrained= tag, checkpoint file, or 'random')",
    )
    register(
        "torchvision",
        _load_torchvision,
        list_models=list_torchvision_models,
        description="torchvision classifiers (pretrained= weights enum name or state-dict file)",
    )


# the loaders import torch: resolved on first use, so `import interp_timm` stays free of it
__getattr__, __dir__, __all__ = interpcore.lazy.attach(
    __name__, {"backbone": ["load_timm", "load_torchvision", "ClassifierBackbone"]}, eager=["register_backbones"]
)
