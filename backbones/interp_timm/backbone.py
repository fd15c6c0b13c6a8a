"""timm and torchvision image classifiers behind the interpcore Backbone interface.

These are vision models without a text tower: capabilities ``image_encoder`` (``encode_image``
returns the pooled features before the classifier) and ``feature_maps`` (Grad-CAM targets).
``features(images)`` with no layer returns the same pooled pre-classifier features; any
module name gives that module's output. Imports torch, timm and torchvision.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from interpcore import Capability, InterpError, get_registry
from interpcore.torch_backbone import TorchBackbone
from interpcore.progress import is_quiet
from interpcore.weights import library_download, load_checked, read_state_dict, state_dict_mismatch

RANDOM = ("random", "none", "scratch")
PRE_LOGITS = "pre_logits"  #: pseudo-layer name: pooled features before the classifier


def _is_random(pretrained) -> bool:
    return pretrained is not None and str(pretrained).lower() in RANDOM


def _looks_like_path(value: str) -> bool:
    return any(s in value for s in ("/", os.sep)) or Path(value).suffix in (
        ".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar"
    )


def _classifier_out(state: dict, classifier: str | None) -> int | None:
    if classifier and f"{classifier}.weight" in state:
        return int(state[f"{classifier}.weight"].shape[0])
    return None


def _only_classifier_differs(model, state, classifier) -> bool:
    problem = state_dict_mismatch(model, state)
    if not problem or not classifier:
        return False
    expected = model.state_dict()
    bad = [
        k for k in expected
        if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)
    ] + [k for k in state if k not in expected]
    return bool(bad) and all(k.startswith(classifier + ".") for k in bad)


# ------------------------------------------------------------------------------------------
# timm


def load_timm(model: str, pretrained=None, device="auto", dtype=None, *, cache_dir=None,
              display_name=None, image_size: int | None = None, **create_kwargs) -> ClassifierBackbone:
    """``timm:<arch>`` or ``timm:<arch>.<tag>``.

    ``pretrained``: ``None`` (the tag in the name, else timm's default tag), a tag, a
    checkpoint file (the model's own state dict; the number of classes is read from its
    classifier when it differs), or ``"random"``. ``image_size``: the preprocessing size
    (default: the model's own, e.g. 224). Extra keyword arguments go to
    ``timm.create_model`` (``num_classes=``, ``img_size=``, ...).
    """
    import timm
    from timm.models import get_pretrained_cfg, is_model, split_model_name_tag

    display_name = display_name or f"timm:{model}"
    arch, tag = split_model_name_tag(model)
    if not is_model(arch):
        raise get_registry().unknown_model("timm", model)
    file = None
    if pretrained is not None and not _is_random(pretrained):
        p = str(pretrained)
        if os.path.isfile(p):
            file = p
        elif _looks_like_path(p):
            raise InterpError(f"checkpoint file for {display_name} not found: {pretrained}")
        else:
            tag = p
    kwargs = dict(create_kwargs)
    if file is not None or _is_random(pretrained):
        net = _timm_create(timm, arch, display_name, **kwargs)
        label = file or "random"
        if file is not None:
            state = read_state_dict(file, what=display_name)
            classifier = net.pretrained_cfg.get("classifier") if hasattr(net, "pretrained_cfg") else None
            if "num_classes" not in kwargs and _only_classifier_differs(net, state, classifier):
                kwargs["num_classes"] = _classifier_out(state, classifier)
                net = _timm_create(timm, arch, display_name, **kwargs)
            load_checked(net, state, what=display_name, source=file)
    else:
        name = f"{arch}.{tag}" if tag else arch
        try:
            cfg = get_pretrained_cfg(name)
        except RuntimeError:  # timm raises for an unknown tag
            cfg = None
        if cfg is None:
            from timm.models import list_pretrained

            known = [m.split(".", 1)[1] for m in list_pretrained(f"{arch}.*")]
            from interpcore.errors import close_matches

            near = close_matches(tag or "", known)
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            listed = f"; its tags: {', '.join(known[:12])}" if known else "; it has no published weights"
            raise InterpError(
                f"unknown pretrained tag '{tag}' for timm model '{arch}'{listed}.{hint} "
                "--pretrained (pretrained= in Python) may also be a checkpoint file (or 'random')."
            )
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        tag = tag or cfg.get("tag") or ""
        what = f"{display_name} (pretrained '{tag}')" if tag else display_name
        net = _timm_pretrained(timm, f"{arch}.{tag}" if tag else arch, cfg, what, cache_dir, kwargs)
        label = tag or arch
    from timm.data import create_transform, resolve_model_data_config

    data_cfg = resolve_model_data_config(net)
    size = image_size
    if size is None and "img_size" in create_kwargs:
        size = create_kwargs["img_size"]
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        data_cfg["input_size"] = (3, *size)
        data_cfg["crop_pct"] = 1.0
    transform = create_transform(**data_cfg, is_training=False)
    return ClassifierBackbone(
        display_name, net, library="timm", pretrained=label, device=device, dtype=dtype,
        transform=transform,
    )


def _timm_create(timm, arch, display_name, **kwargs):
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise InterpError(f"timm could not build {display_name}: {exc}") from None


def _timm_pretrained(timm, name, cfg: dict, what: str, cache_dir, kwargs):
    """``timm.create_model(pretrained=True)``: timm chooses the source (Hub or URL) and
    downloads with its own helpers; interpcore only names those places when it fails."""
    from timm.models._builder import _resolve_pretrained_source

    source, where = _resolve_pretrained_source(cfg)
    repo = (where[0] if isinstance(where, (tuple, list)) else where) if source == "hf-hub" else None
    url = where if source == "url" else None
    url_dir = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    if source not in ("hf-hub", "url", "file"):
        raise InterpError(f"timm lists no download location for {what}; pass --pretrained "
                          "(pretrained= in Python) a checkpoint file")

    def create():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timm.create_model(name, pretrained=True, cache_dir=cache_dir, **kwargs)

    try:
        return library_download(create, what=what, url=url, url_dir=url_dir, hub_repo=repo,
                                cache_dir=cache_dir, filename=None if url else (
                                    where[1] if isinstance(where, (tuple, list)) else "model.safetensors"))
    except InterpError:
        raise
    except Exception as exc:  # noqa: BLE001 - not a download problem: the checkpoint itself
        raise InterpError(f"timm could not load {what}: {exc}") from None


# ------------------------------------------------------------------------------------------
# torchvision


def load_torchvision(model: str, pretrained=None, device="auto", dtype=None, *, cache_dir=None,
                     display_name=None, image_size: int | None = None,
                     **create_kwargs) -> ClassifierBackbone:
    """``torchvision:<name>`` (resnet18, resnet50, ...).

    ``pretrained``: ``None`` / ``"DEFAULT"`` (torchvision's default weights), a weights enum
    name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, or ``ResNet50_Weights.IMAGENET1K_V2``), a file
    with a torchvision-format state dict (FALCON's target models; the number of classes is
    read from the checkpoint's classifier), or ``"random"``. ``image_size``: resize and crop
    to this size instead of the ImageNet 256/224 preprocessing (small-image models).
    """
    import torchvision

    display_name = display_name or f"torchvision:{model}"
    try:
        known = torchvision.models.list_models(module=torchvision.models)
    except TypeError:  # pragma: no cover - older torchvision
        known = torchvision.models.list_models()
    if model not in known:
        raise get_registry().unknown_model("torchvision", model)
    kwargs = dict(create_kwargs)
    transform = None
    file = None
    if pretrained is not None and not _is_random(pretrained) and (
        os.path.isfile(str(pretrained)) or _looks_like_path(str(pretrained))
    ):
        file = str(pretrained)
        if not os.path.isfile(file):
            raise InterpError(f"checkpoint file for {display_name} not found: {pretrained}")
    if file is not None or _is_random(pretrained):
        net = _tv_build(torchvision, model, display_name, **kwargs)
        if file is not None:
            state = read_state_dict(file, what=display_name)
            classifier = _last_linear(net)
            if "num_classes" not in kwargs and _only_classifier_differs(net, state, classifier):
                kwargs["num_classes"] = _classifier_out(state, classifier)
                net = _tv_build(torchvision, model, display_name, **kwargs)
            load_checked(net, state, what=display_name, source=file)
        label = file or "random"
    else:
        enum = torchvision.models.get_model_weights(model)
        tag = str(pretrained or "DEFAULT").split(".")[-1]
        try:
            weights = enum[tag] if tag != "DEFAULT" else enum.DEFAULT
        except KeyError:
            names = [w.name for w in enum]
            raise InterpError(
                f"unknown weights '{pretrained}' for torchvision model '{model}'; its weights: "
                f"{', '.join(names)}. --pretrained (pretrained= in Python) may also be a checkpoint file (or 'random')."
            ) from None
        what = f"{display_name} (pretrained '{weights.name}')"
        # torchvision's own download (torch.hub: temporary file, SHA-256 prefix checked)
        state = library_download(
            lambda: weights.get_state_dict(progress=not is_quiet(), check_hash=True, weights_only=True),
            what=what, url=weights.url, url_dir=Path(torch.hub.get_dir()) / "checkpoints",
        )
        classes = len(weights.meta["categories"])
        if kwargs.pop("num_classes", classes) != classes:
            raise InterpError(
                f"{what} has {classes} classes; num_classes= applies only to checkpoint files "
                "or random weights"
            )
        net = _tv_build(torchvision, model, display_name, num_classes=classes, **kwargs)
        state = _torchvision_fix_keys(model, state)
        load_checked(net, state, what=display_name, source=weights.url)
        transform = weights.transforms()
        label = weights.name
    if transform is None or image_size is not None:
        from torchvision import transforms as T

        resize, crop = (256, 224) if image_size is None else (image_size, image_size)
        transform = T.Compose([
            T.Resize(resize), T.CenterCrop(crop), T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])
    return ClassifierBackbone(
        display_name, net, library="torchvision", pretrained=label, device=device, dtype=dtype,
        transform=transform,
    )


def _tv_build(torchvision, model, display_name, **kwargs):
    try:
        return torchvision.models.get_model(model, weights=None, **kwargs)
    except Exception as exc:  # noqa: BLE001 - e.g. an option the model does not take
        raise InterpError(f"torchvision could not build {display_name}: {exc}") from None


def _torchvision_fix_keys(model: str, state: dict) -> dict:
    """The old DenseNet key names torchvision's own loader renames ('norm.1' -> 'norm1')."""
    if not model.startswith("densenet"):
        return state
    import re

    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
    )
    out = {}
    for k, v in state.items():
        m = pattern.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _last_linear(net) -> str | None:
    name = None
    for n, m in net.named_modules():
        if isinstance(m, torch.nn.Linear):
            name = n
    return name


# ------------------------------------------------------------------------------------------


class ClassifierBackbone(TorchBackbone):
    """A timm or torchvision image classifier (no text tower).

    ``encode_image`` / ``features()``: the pooled features just before the classifier
    (timm: ``forward_head(..., pre_logits=True)``; torchvision: the input of the last
    ``nn.Linear``). ``logits(images)``: the classifier output. Grad-CAM targets the last
    convolutional stage (``layer4`` for ResNets); for ViTs the last block's first norm with
    :meth:`gradcam_reshape_transform`.
    """

    def __init__(self, name, model, *, library: str, **kwargs):
        self.library = library
        self._prefix_tokens = 0
        self._grid = None
        gradcam = self._gradcam_layers(model)
        caps = {Capability.IMAGE_ENCODER}
        if gradcam:
            caps.add(Capability.FEATURE_MAPS)
        self._classifier = (
            model.pretrained_cfg.get("classifier") if library == "timm" and hasattr(model, "pretrained_cfg")
            else _last_linear(model)
        )
        embed_dim = getattr(model, "num_features", None)
        if embed_dim is None and self._classifier:
            with torch.no_grad():
                embed_dim = model.get_submodule(self._classifier).in_features
        super().__init__(
            name, model, embed_dim=embed_dim, capabilities=caps, default_layer=PRE_LOGITS,
            gradcam_layers=gradcam, **kwargs,
        )

    def _gradcam_layers(self, model) -> list[str]:
        blocks = getattr(model, "blocks", None)
        if self.library == "timm" and blocks is not None and hasattr(model, "patch_embed"):
            self._prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
            self._grid = tuple(model.patch_embed.grid_size)
            last = len(blocks) - 1
            norm = "norm1" if hasattr(blocks[last], "norm1") else None
            return [f"blocks.{last}.{norm}" if norm else f"blocks.{last}"]
        info = getattr(model, "feature_info", None)
        if info is not None:
            try:
                modules = info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
                if modules:
                    return [modules[-1]]
            except Exception:  # noqa: BLE001
                pass
        if hasattr(model, "layer4"):
            return ["layer4"]
        feats = getattr(model, "features", None)
        if isinstance(feats, torch.nn.Sequential) and len(feats):
            return [f"features.{len(feats) - 1}"]
        return []

    def feature_layers(self) -> list[str]:
        return [PRE_LOGITS] + super().feature_layers()

    def module(self, layer):
        if layer == PRE_LOGITS:
            raise InterpError(f"'{PRE_LOGITS}' is computed, not a module of {self.name}; use features()")
        return super().module(layer)

    def _pre_logits(self, pixels):
        if self.library == "timm":
            return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)
        got = []
        handle = self.model.get_submodule(self._classifier).register_forward_pre_hook(
            lambda _m, args: got.append(args[0])
        )
        try:
            self.model(pixels)
        finally:
            handle.remove()
        return got[0].flatten(1)

    def _encode_image(self, pixels):
        return self._pre_logits(pixels)

    def _forward_for_features(self, pixels):
        return self.model(pixels)

    @torch.no_grad()
    def features(self, images, layer=None, *, batch_size: int = 64, pool=None):
        if layer in (None, PRE_LOGITS):
            return self.encode_image(images, batch_size=batch_size)
        return super().features(images, layer, batch_size=batch_size, pool=pool)

    @torch.no_grad()
    def logits(self, images, *, batch_size: int = 64) -> torch.Tensor:
        """Classifier outputs (N, classes)."""
        if not isinstance(images, (torch.Tensor, list, tuple)):
            images = [images]
        outs = [self.model(self.to_pixels(b)).float() for b in self._batches(images, batch_size)]
        return torch.cat(outs)

    def gradcam_reshape_transform(self):
        if self._grid is None:
            return None
        h, w = self._grid

        def reshape(tensor):
            x = tensor[:, -h * w :, :]
            return x.reshape(x.shape[0], h, w, x.shape[-1]).permute(0, 3, 1, 2)

        return reshape
