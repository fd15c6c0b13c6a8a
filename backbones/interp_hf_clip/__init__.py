"""Built-in interpcore plugin: transformers CLIP / SigLIP dual encoders as ``hf:<repo or folder>``.

``hf:openai/clip-vit-base-patch32`` loads ``CLIPModel`` with its image processor and
tokenizer; ``hf:/path/to/folder`` loads a folder written by ``save_pretrained``; SigLIP repos
(``model_type: siglip``) load as ``SiglipModel``. Any repo id is accepted, so the listing
shows well-known ones only. No torch / transformers import happens here.
"""

from __future__ import annotations

import interpcore

#: Well-known repos shown by `interp backbones list 'hf:*'` (any CLIP/SigLIP repo id works).
KNOWN = [
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-base-patch16",
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-large-patch14-336",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "google/siglip-base-patch16-224",
]


def _list():
    return [(name, []) for name in KNOWN]


def _load(model, *, pretrained=None, device="auto", dtype=None, **options):
    from .backbone import load_hf_clip

    return load_hf_clip(model, pretrained, device, dtype, **options)


@interpcore.hookimpl
def register_backbones(register):
    register(
        "hf",
        _load,
        list_models=_list,
        description="transformers CLIPModel / SiglipModel: hf:<repo id or local folder>",
    )


# the loaders import torch: resolved on first use, so `import interp_hf_clip` stays free of it
__getattr__, __dir__, __all__ = interpcore.lazy.attach(
    __name__, {"backbone": ["load_hf_clip", "HFClipBackbone"]}, eager=["register_backbones"]
)
