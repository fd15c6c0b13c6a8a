"""Built-in interpcore plugin: the models trained on the synthetic shapes world.

* ``shapes:clip-vit``: a small open_clip CLIP (ViT image tower, patch 4 on 32 x 32 images),
  loaded through the open_clip plugin's code path, so it has the same capabilities as a real
  open_clip ViT (image and text encoders, ViT residual stream for PRS / TextSpan).
* ``shapes:resnet``: a small timm ResNet that recognises the colours and shapes in an image
  (image encoder = pooled features before the classifier, Grad-CAM on the last stage).

The weights ship in ``weights/`` (safetensors, fp16); ``interp shapes train`` retrains them.
Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

import interpcore

MODELS = ("clip-vit", "resnet")


def _list_models():
    from pathlib import Path

    here = Path(__file__).resolve().parent / "weights"
    return [(m, [str(here / f"{m}.safetensors")]) for m in MODELS]


def _load(model, *, pretrained=None, device="auto", dtype=None, **options):
    if model not in MODELS:  # before torch is imported
        raise interpcore.get_registry().unknown_model("shapes", model)
    from .loading import load_shapes_model

    return load_shapes_model(model, pretrained=pretrained, device=device, dtype=dtype, **options)


@interpcore.hookimpl
def register_backbones(register):
    register(
        "shapes",
        _load,
        list_models=_list_models,
        description="models trained on the synthetic shapes world (shipped weights, offline)",
    )
