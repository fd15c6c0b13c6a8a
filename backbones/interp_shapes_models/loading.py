"""Loaders of the shipped shapes-world models (imports torch; used by the plugin's loader)."""

from __future__ import annotations

from pathlib import Path

from interpcore import InterpError, get_backbone, get_registry

from .models import CLIP_CONFIG, CLIP_WEIGHTS, RESNET_CONFIG, RESNET_WEIGHTS

OPEN_CLIP_ARCH = "shapes-clip-vit"
TIMM_ARCH = "shapes_resnet"
# the module's public names (timm's register_model appends its entry point's name to __all__,
# creating it when missing)
__all__ = ["load_clip", "load_resnet", "load_shapes_model", "shapes_resnet"]

_RETRAIN = {
    "clip-vit": "python -m interp_shapes.train clip --out {dir} --seed 0",
    "resnet": "python -m interp_shapes.train resnet --out {dir} --seed 0",
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


def _config(config, path: Path, model: str, default: Path):
    """The architecture: ``config`` (a dict or JSON file) when given, else the config saved
    next to the weights, else the shipped one."""
    from .models import read_json

    if isinstance(config, dict):
        return dict(config)
    return read_json(config if config is not None else _config_for(path, model, default))


def load_clip(pretrained=None, device="auto", dtype=None, *, config=None, **options):
    """``shapes:clip-vit``: the shapes CLIP's config registered as an open_clip architecture
    and loaded through the registry's ``open_clip`` family, so it is an open_clip backbone
    with every capability of one (residual stream included), named ``shapes:clip-vit``.
    ``pretrained="random"`` gives the untrained architecture (what ``interp shapes train``
    starts from); ``config=`` another architecture (dict or JSON file)."""
    random = str(pretrained).lower() == "random"
    path = CLIP_WEIGHTS if random else _weights_path("clip-vit", pretrained, CLIP_WEIGHTS)
    cfg = _config(config, path, "clip-vit", CLIP_CONFIG)
    bb = get_backbone(
        f"open_clip:{OPEN_CLIP_ARCH}", pretrained="random" if random else str(path), device=device,
        dtype=dtype, display_name="shapes:clip-vit", model_config=cfg, **options,
    )
    bb.config = cfg
    return bb


def shapes_resnet(pretrained=False, *, config=None, **kwargs):
    """timm's entry point for the shapes ResNet (``timm.create_model("shapes_resnet",
    config=...)``): built from the config; the loader loads the weights."""
    from .models import build_resnet

    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
    return build_resnet(config, **kwargs)


def _register_timm_resnet() -> str:
    """Register :func:`shapes_resnet` with timm (its public ``register_model``) once."""
    import timm.models

    if not timm.models.is_model(TIMM_ARCH):
        timm.models.register_model(shapes_resnet)
    return TIMM_ARCH


def load_resnet(pretrained=None, device="auto", dtype=None, *, config=None, **options):
    """``shapes:resnet``: the shapes ResNet registered as a timm architecture and loaded
    through the registry's ``timm`` family (a timm classifier backbone: image encoder,
    feature maps, Grad-CAM on the last stage), named ``shapes:resnet``, with the shapes
    models' own preprocessing. ``pretrained="random"`` / ``config=`` as for the CLIP."""
    from .models import image_transform

    if options:
        raise InterpError(f"shapes:resnet takes no options, got {', '.join(sorted(options))}")
    random = str(pretrained).lower() == "random"
    path = RESNET_WEIGHTS if random else _weights_path("resnet", pretrained, RESNET_WEIGHTS)
    cfg = _config(config, path, "resnet", RESNET_CONFIG)
    if not cfg.get("labels"):
        raise InterpError("the shapes:resnet config names no output labels ('labels': [...])")
    if not random:
        _check_readable(path)
    bb = get_backbone(
        f"timm:{_register_timm_resnet()}", pretrained="random" if random else str(path),
        device=device, dtype=dtype, display_name="shapes:resnet", config=cfg,
        num_classes=len(cfg["labels"]),
    )
    # the shapes models' preprocessing (OpenAI mean / std, bicubic resize to the model's size),
    # not timm's defaults for an architecture without a pretrained config
    bb.transform = image_transform(int(cfg.get("image_size", 32)))
    bb.classes = list(cfg["labels"])
    bb.config = cfg
    return bb


def _check_readable(path: Path) -> None:
    """A corrupt weights file is an error that says how to retrain (not timm's message)."""
    from .models import load_state_dict

    load_state_dict(path)


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
