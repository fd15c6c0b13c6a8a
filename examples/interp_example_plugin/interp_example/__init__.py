"""Example interpcore plugin.

It adds two backbone families: ``colorhist:`` (an image "encoder" that embeds an image as its
joint RGB colour histogram, no weights needed) and ``toyvit:`` (a tiny CLIP-like ViT written
from scratch, random weights, with the ViT residual stream: PRS and TextSpan run on it), and
an explainer ``occlusion`` (how much the embedding of an image changes when each patch is
greyed out). Heavy imports (torch) live in
``interp_example.impl`` and happen only when an object is built, so ``interp --help`` stays fast.
"""

from interpcore import Capability, hookimpl

BINS = {"rgb-4": 4, "rgb-8": 8}


def _load_backbone(model, *, pretrained=None, device="auto", dtype=None, **options):
    from interpcore import get_registry

    if model not in BINS:
        raise get_registry().unknown_model("colorhist", model)
    from .impl import ColorHistogramBackbone

    return ColorHistogramBackbone(f"colorhist:{model}", BINS[model], device=device, dtype=dtype)


def _load_toyvit(model, *, pretrained=None, device="auto", dtype=None, **options):
    from interpcore import get_registry

    from .vit import CONFIGS, build

    if model not in CONFIGS:
        raise get_registry().unknown_model("toyvit", model)
    return build(model, pretrained=pretrained, device=device, dtype=dtype)


def _make_occlusion(backbone=None, **options):
    from .impl import OcclusionExplainer

    if backbone is None:
        from interpcore import get_backbone

        backbone = get_backbone("colorhist:rgb-8")
    return OcclusionExplainer(backbone, **options)


@hookimpl
def register_backbones(register):
    register("colorhist", _load_backbone, list_models=lambda: sorted(BINS),
             description="joint RGB colour histogram of an image (no weights)")
    register("toyvit", _load_toyvit, list_models=lambda: ["tiny"],
             description="a tiny CLIP-like ViT with random weights and a residual stream",
             # what methods use with it when nothing is named (docs/plugins.md, defaults)
             defaults={"text_pool": "google_3498_english"})


@hookimpl
def register_explainers(register):
    register("occlusion", _make_occlusion, requires=[Capability.IMAGE_ENCODER],
             description="embedding change when each image patch is greyed out")
