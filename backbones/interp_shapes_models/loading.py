"""Loaders of the shipped shapes-world models (imports torch; used by the plugin's loader)."""

from __future__ import annotations

from pathlib import Path

from interpcore import InterpError, get_registry

from .models import CLIP_CONFIG, CLIP_WEIGHTS, RESNET_CONFIG, RESNET_WEIGHTS

OPEN_CLIP_ARCH = "shapes-clip-vit"

_RETRAIN = {
    "clip-vit": "python -m interp_shapes_models.train clip --out {dir} --seed 0",
    "resnet": "python -m interp_shapes_models.train resnet --out {dir} --seed 0",
}


def _weights_path(model: str, pretrained, default: Path) -> Path:
    """The weights file: ``pretrained`` (a file, or a folder holding ``<model>.safetensors``)
    or the shipped file; a clear error saying how to retrain when it is missing."""
    if pretrained is None:
        path = default
    else:
        path = Path(pretrained)
        if path.is_dir():
            path = path / default.name
    if not path.is_file():
        folder = default.parent if pretrained is None else path.parent
        raise InterpError(
            f"weights for shapes:{model} not found at {path}; retrain them with "
            f"`{_RETRAIN[model].format(dir=folder)}` (or `interp shapes train "
            f"{model.split('-')[0]} --out {folder}`)"
        )
    return path


def _config_for(path: Path, model: str, default: Path) -> Path:
    """A config saved next to retrained weights (``<model>-config.json``) wins over the default."""
    sibling = path.with_name(f"{model}-config.json")
    return sibling if sibling.is_file() else default


def load_clip(pretrained=None, device="auto", dtype=None, **options):
    try:
        from interp_open_clip.backbone import load_open_clip
    except ImportError as exc:  # pragma: no cover - the open_clip plugin ships with interpcore
        raise InterpError(f"shapes:clip-vit needs the open_clip backbone plugin ({exc})") from None
    path = _weights_path("clip-vit", pretrained, CLIP_WEIGHTS)
    return load_open_clip(
        OPEN_CLIP_ARCH, pretrained=str(path), device=device, dtype=dtype,
        display_name="shapes:clip-vit", model_config=str(_config_for(path, "clip-vit", CLIP_CONFIG)),
        **options,
    )


def load_resnet(pretrained=None, device="auto", dtype=None, **options):
    from interp_timm.backbone import ClassifierBackbone

    from .models import build_resnet, image_transform, load_state_dict, read_json, resnet_label_names

    if options:
        raise InterpError(f"shapes:resnet takes no options, got {', '.join(sorted(options))}")
    path = _weights_path("resnet", pretrained, RESNET_WEIGHTS)
    cfg = read_json(_config_for(path, "resnet", RESNET_CONFIG))
    model = build_resnet(cfg)
    state = load_state_dict(path)
    from interpcore.weights import load_checked

    load_checked(model, state, what="shapes:resnet", source=path)
    bb = ClassifierBackbone(
        "shapes:resnet", model, library="timm", pretrained=str(path), device=device, dtype=dtype,
        transform=image_transform(int(cfg.get("image_size", 32))),
    )
    bb.classes = list(cfg.get("labels") or resnet_label_names())
    return bb


def _domain(name: str) -> dict:
    """The images these models know (TorchBackbone.image_domain): square renders of the shapes
    world, 32 x 32 by default; inputs far from that earn a warning, not a refusal."""
    return {"size": 32, "what": "square 32 x 32 renders of the synthetic shapes world",
            "hint": "for photographs use a real backbone, e.g. -b open_clip:ViT-B-32"}


def load_shapes_model(model: str, *, pretrained=None, device="auto", dtype=None, **options):
    if model == "clip-vit":
        bb = load_clip(pretrained, device, dtype, **options)
    elif model == "resnet":
        bb = load_resnet(pretrained, device, dtype, **options)
    else:
        raise get_registry().unknown_model("shapes", model)
    bb.image_domain = _domain(model)
    return bb
