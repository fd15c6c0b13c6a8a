"""Built-in interpcore plugin: the models trained on the synthetic shapes world.

* ``shapes:clip-vit``: a small open_clip CLIP (ViT image tower, patch 4 on 32 x 32 images),
  its config registered as an open_clip architecture and loaded through the registry
  (``open_clip:`` family), so it has the same capabilities as a real open_clip ViT (image and
  text encoders, ViT residual stream for PRS / TextSpan).
* ``shapes:resnet``: a small timm ResNet that recognises the colours and shapes in an image,
  registered with timm and loaded through the registry (``timm:`` family): image encoder =
  pooled features before the classifier, Grad-CAM on the last stage.

The weights ship in ``weights/`` (safetensors, fp16); ``interp shapes train`` (the shapes
plugin, which owns the world's generator) retrains them. This package imports no other
plugin.
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
        # What the shapes models are used with: the methods read these instead of names.
        defaults={
            "vocabulary": "shapes",
            "image_mean": "shapes",
            "dataset": "shapes",
            "spurious_dataset": "shapes-spurious",
            "text_pool": "shapes",
            "caption_pool": "shapes-captions",
            "captioner": "shapes:clip-vit",
            # the shapes CLIP saw whole 32 x 32 scenes only: a Grad-CAM box cut out and
            # resized reads to it as a large, zoomed shape (FALCON shows it in place)
            "crop_view": "in-place",
        },
        # The offline default of every method when the user names no backbone.
        default_models={"vision-language": "clip-vit", "vision": "resnet"},
    )
