"""open_clip models behind the interpcore Backbone interface (imports torch and open_clip).

Entry point for other plugins: :func:`load_open_clip`. The registry names ``open_clip:<model>``
and ``clip:<OpenAI name>`` both end up here.

Weights are resolved here rather than inside ``open_clip.create_model`` so that a missing file
while offline produces one clear message, an interrupted download leaves nothing behind, and a
checkpoint that does not fit says which keys mismatch. The model itself is still built by
``open_clip.create_model`` from open_clip's own config, and the checkpoint goes through
open_clip's own state-dict conversions, so results equal open_clip's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
from pathlib import Path

import torch

from interpcore import Capability, InterpError, get_registry
from interpcore.torch_backbone import TorchBackbone
from interpcore.weights import hub_file, library_download, load_checked, read_state_dict

from .listing import OPENAI_NAMES

#: The weights each name gets when ``pretrained`` is not given. ``open_clip:ViT-B-32`` uses
#: the tag SpLiCE uses (splice/splice.py ``load``); other architectures get the tag named
#: here, else their first listed tag.
DEFAULT_TAGS = {
    "ViT-B-32": "laion2b_s34b_b79k",
    "ViT-B-16": "laion2b_s34b_b88k",
    "ViT-L-14": "laion2b_s32b_b82k",
    "ViT-H-14": "laion2b_s32b_b79k",
    "ViT-g-14": "laion2b_s34b_b88k",
    "ViT-bigG-14": "laion2b_s39b_b160k",
}

#: ``pretrained=`` values meaning "no weights, random initialisation" (tests, smoke runs).
RANDOM = ("random", "none", "scratch")

_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_config_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_logging():
    """open_clip logs 'initialized randomly' warnings before we load the weights ourselves."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _factory():
    from open_clip import factory

    return factory


def register_model_config(model_name: str, model_config) -> dict:
    """Register an architecture (open_clip config schema) under ``model_name``.

    ``model_config`` is a dict or a path to a JSON file; a file written by open_clip's
    ``push_to_hf_hub`` (``{"model_cfg": ..., "preprocess_cfg": ...}``) works too. Returns the
    config dict. Re-registering the same name replaces the earlier config.
    """
    if isinstance(model_config, (str, os.PathLike)):
        path = Path(model_config)
        try:
            model_config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InterpError(f"model config file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise InterpError(f"model config {path} is not valid JSON ({exc})") from None
    if not isinstance(model_config, dict):
        raise InterpError(f"model_config must be a dict or a JSON file path, got {type(model_config).__name__}")
    cfg = model_config.get("model_cfg", model_config)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise InterpError(
            f"model config for '{model_name}' lacks {', '.join(missing)} "
            "(open_clip's schema: embed_dim, vision_cfg, text_cfg)"
        )
    factory = _factory()
    with _config_lock:
        registry = getattr(factory, "_MODEL_CONFIGS", None)
        if isinstance(registry, dict):
            registry[model_name] = copy.deepcopy(cfg)
        else:  # pragma: no cover - future open_clip without the private table
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="interp_open_clip_cfg_"))
            (folder / f"{model_name}.json").write_text(json.dumps(cfg), encoding="utf-8")
            factory.add_model_config(folder)
    return cfg


def _preprocess_overrides(cfg: dict | None) -> dict:
    if not cfg:
        return {}
    return {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}


def _find_in_dir(folder: Path) -> Path | None:
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.pt*")) + sorted(folder.glob("*.bin"))
    return found[0] if found else None


class _Weights:
    """Where the weights come from: a file plus preprocessing overrides and flags."""

    def __init__(self, path=None, preprocess=None, quick_gelu=False, label=None):
        self.path = path
        self.preprocess = preprocess or {}
        self.quick_gelu = quick_gelu
        self.label = label


def _resolve_tag(arch: str, tag: str, what: str, cache_dir) -> _Weights:
    from open_clip import pretrained as ocp

    cfg = ocp.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ocp.list_pretrained_tags_by_model(arch)
        from interpcore.errors import close_matches

        near = close_matches(tag, tags)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        listed = f"; its tags: {', '.join(tags)}" if tags else "; it has no published weights here"
        raise InterpError(
            f"unknown pretrained tag '{tag}' for open_clip model '{arch}'{listed}.{hint} "
            "--pretrained (pretrained= in Python) may also be a checkpoint file or folder."
        )
    quick = bool(cfg.get("quick_gelu", False))
    if cfg.get("file"):
        return _Weights(cfg["file"], _preprocess_overrides(cfg), quick)
    url = ocp.get_pretrained_url(arch, tag)
    url_cache = Path(cache_dir or os.path.expanduser("~/.cache/clip"))
    # A copy already on disk wins, wherever it is: the OpenAI `clip` package and open_clip
    # both keep URL downloads in ~/.cache/clip, which open_clip skips when a Hub copy exists.
    if url:
        name = os.path.basename(url)
        for d in {url_cache, Path(os.path.expanduser("~/.cache/clip"))}:
            if (d / name).is_file():
                return _Weights(str(d / name), _preprocess_overrides(cfg), quick)
    if not url and not cfg.get("hf_hub"):
        raise InterpError(f"open_clip lists tag '{tag}' for '{arch}' without a download location")
    # open_clip's own downloader (the Hub when the tag is published there, else the URL with
    # its checksum), offline-aware and with its errors as interpcore's one message
    hub = cfg.get("hf_hub") if ocp.has_hf_hub() else ""
    repo, hub_name = os.path.split(hub) if hub else (None, "")
    path = library_download(
        lambda: ocp.download_pretrained(cfg, cache_dir=cache_dir), what=what, url=url or None,
        url_dir=url_cache, hub_repo=repo, cache_dir=cache_dir,
        filename=None if url else hub_name or _WEIGHT_FILES[0],
    )
    return _Weights(path, _preprocess_overrides(cfg), quick)


def _hub_model(repo: str, what: str, cache_dir) -> tuple[str, dict, _Weights]:
    """Config and weights of an ``hf-hub:org/repo`` model, registered under a local name."""
    by_hand = "pass its folder (open_clip_config.json + weights) as --pretrained <folder> (pretrained= in Python)"
    cfg_path = hub_file(repo, ["open_clip_config.json"], what=what, cache_dir=cache_dir, by_hand=by_hand)
    try:
        full = json.loads(Path(cfg_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InterpError(f"{cfg_path} (open_clip config of {repo}) is not valid JSON ({exc})") from None
    if "model_cfg" not in full:
        raise InterpError(f"{cfg_path} (open_clip config of {repo}) has no 'model_cfg'")
    local = "interp-hf-hub-" + repo.replace("/", "-")
    register_model_config(local, full["model_cfg"])
    weights = hub_file(
        repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"], what=what,
        cache_dir=cache_dir, by_hand=by_hand,
    )
    return local, full["model_cfg"], _Weights(weights, _preprocess_overrides(full.get("preprocess_cfg")))


def _local_folder(folder: Path, arch: str | None, what: str) -> tuple[str, _Weights]:
    """``pretrained=<folder>``: an open_clip export (open_clip_config.json + weights) or a folder with one checkpoint."""
    cfg_file = folder / "open_clip_config.json"
    ckpt = _find_in_dir(folder)
    if ckpt is None:
        raise InterpError(f"no checkpoint (.safetensors/.pt/.pth/.bin) found in {folder} for {what}")
    if cfg_file.is_file():
        full = json.loads(cfg_file.read_text(encoding="utf-8"))
        if "model_cfg" in full:
            local = "interp-local-" + str(folder.resolve()).strip("/").replace("/", "-")
            register_model_config(local, full["model_cfg"])
            return local, _Weights(str(ckpt), _preprocess_overrides(full.get("preprocess_cfg")))
    if arch is None:
        raise InterpError(f"{folder} has no open_clip_config.json with a 'model_cfg' for {what}")
    return arch, _Weights(str(ckpt))


def _convert(model, state: dict) -> dict:
    """open_clip's own conversions (third-party layouts, old text layout, resized embeddings)."""
    from open_clip import factory as f

    with contextlib.suppress(Exception):
        state = f.convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = f.convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        ref = getattr(model, key, None)
        if key in state and ref is not None and ref.ndim != state[key].ndim:
            state[key] = state[key].reshape(ref.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(model.logit_bias)
    state.pop("text.transformer.embeddings.position_ids", None)
    with contextlib.suppress(Exception):
        f.resize_pos_embed(state, model)
    with contextlib.suppress(Exception):
        f.resize_text_pos_embed(state, model)
    return state


def load_open_clip(
    model_name: str,
    pretrained=None,
    device="auto",
    dtype=None,
    *,
    display_name: str | None = None,
    model_config=None,
    cache_dir=None,
    quick_gelu: bool | None = None,
    prefix: str = "open_clip",
    **create_kwargs,
) -> OpenClipBackbone:
    """Build an open_clip model as an interpcore backbone.

    ``model_name``: an open_clip architecture (``ViT-B-32``), ``hf-hub:org/repo``, or any
    name when ``model_config`` is given. ``pretrained``: a tag (``laion2b_s34b_b79k``,
    ``openai``, ...), a checkpoint file (.safetensors/.pt/.pth/.bin, fp16 files are cast to
    the model's dtype), a folder holding one, ``"random"`` for random weights, or ``None``
    for the default tag. ``model_config``: a dict or JSON file in open_clip's config schema
    that registers ``model_name`` as a new architecture first. ``display_name``: the name the
    backbone reports (default ``f"{prefix}:{model_name}"``). ``quick_gelu``: force QuickGELU
    (default: what the tag was trained with). Extra keyword arguments go to
    ``open_clip.create_model`` (e.g. ``force_image_size``).
    """
    import open_clip
    from open_clip import pretrained as ocp

    display_name = display_name or f"{prefix}:{model_name}"
    if model_config is not None:
        register_model_config(model_name, model_config)
    tag_label = "random" if str(pretrained).lower() in RANDOM else pretrained
    what = f"{display_name} (pretrained '{tag_label}')" if pretrained is not None else display_name
    weights = _Weights()

    if model_name.startswith("hf-hub:") and pretrained is not None and os.path.isdir(str(pretrained)):
        # the repo downloaded by hand: a folder with open_clip_config.json and the weights
        arch, weights = _local_folder(Path(pretrained), None, what)
        weights.label = str(pretrained)
    elif model_name.startswith("hf-hub:"):
        if pretrained is not None and str(pretrained).lower() not in RANDOM:
            raise InterpError(
                f"{display_name}: an hf-hub: model brings its own weights; leave --pretrained "
                "unset (or pass the downloaded repo folder)"
            )
        arch, _model_cfg, weights = _hub_model(model_name[len("hf-hub:"):], what, cache_dir)
        weights.label = model_name
        if str(pretrained).lower() in RANDOM:
            weights = _Weights(preprocess=weights.preprocess, label="random")
    else:
        arch = model_name.replace("/", "-")
        if _factory().get_model_config(arch) is None:
            raise get_registry().unknown_model(prefix, model_name)
        if pretrained is None:  # never silently random: a custom architecture needs a file
            tags = ocp.list_pretrained_tags_by_model(arch)
            pretrained = DEFAULT_TAGS.get(arch) if DEFAULT_TAGS.get(arch) in tags else (tags[0] if tags else None)
            if pretrained is None:
                raise InterpError(
                    f"open_clip model '{arch}' has no published weights; pass --pretrained (pretrained= in Python) a "
                    "checkpoint file or folder (or --pretrained random for random weights)"
                )
            what = f"{display_name} (pretrained '{pretrained}')"
        if pretrained is None or str(pretrained).lower() in RANDOM:
            weights = _Weights(label="random" if pretrained is not None else None)
        elif str(pretrained).startswith("hf-hub:"):
            # weights of this architecture in a Hub repo: hf-hub:org/repo[/file]
            spec = str(pretrained)[len("hf-hub:"):].strip("/")
            parts = spec.split("/")
            repo, names = "/".join(parts[:2]), (["/".join(parts[2:])] if len(parts) > 2 else [
                "open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
            weights = _Weights(hub_file(repo, names, what=what, cache_dir=cache_dir), label=str(pretrained))
        elif os.path.isfile(str(pretrained)):
            weights = _Weights(str(pretrained), label=str(pretrained))
        elif os.path.isdir(str(pretrained)):
            arch, weights = _local_folder(Path(pretrained), arch, what)
            weights.label = str(pretrained)
        elif any(sep in str(pretrained) for sep in ("/", os.sep)) or Path(str(pretrained)).suffix in (
            ".pt", ".pth", ".bin", ".safetensors", ".ckpt"
        ):
            raise InterpError(f"checkpoint file for {display_name} not found: {pretrained}")
        else:
            weights = _resolve_tag(arch, str(pretrained), what, cache_dir)
            weights.label = str(pretrained)
    if quick_gelu is None:
        quick_gelu = weights.quick_gelu

    try:
        with _quiet_logging():
            model = open_clip.create_model(
                arch,
                pretrained=None,
                device="cpu",
                force_quick_gelu=bool(quick_gelu),
                force_preprocess_cfg=weights.preprocess or None,
                pretrained_text=False,
                pretrained_image=False,
                cache_dir=cache_dir,
                **create_kwargs,
            )
    except InterpError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an HF text tower config that cannot be fetched
        raise InterpError(f"open_clip could not build '{arch}' for {display_name}: {exc}") from None
    if weights.path is not None:
        state = read_state_dict(weights.path, what=display_name)
        state = _convert(model, state)
        # TorchScript files (OpenAI's releases) also carry the causal mask buffer, which
        # open_clip rebuilds itself (a non-persistent buffer)
        load_checked(model, state, what=display_name, source=weights.path,
                     ignore_unexpected=("attn_mask", "*.attn_mask"))

    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    try:
        with _quiet_logging():
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001
        raise InterpError(
            f"the tokenizer of {display_name} could not be loaded ({exc}); if you are offline, "
            "pre-populate the Hugging Face cache (HF_HOME) with it"
        ) from None
    return OpenClipBackbone(
        display_name, model, pretrained=weights.label, device=device, dtype=dtype,
        transform=transform, tokenizer=tokenizer,
    )


def load_openai_clip(model: str, pretrained=None, device="auto", dtype=None, **options) -> OpenClipBackbone:
    """``clip:<name>`` with OpenAI's names (``ViT-B/32``, ``RN50``, ``ViT-L/14@336px``).

    Default weights: the ``openai`` tag (OpenAI's released checkpoints, QuickGELU), as the
    OpenAI ``clip`` package that SpLiCE uses. ``pretrained`` may also be a path, e.g. the
    ``~/.cache/clip/ViT-B-32.pt`` file ``clip.load`` downloaded.
    """
    arch = OPENAI_NAMES.get(model)
    if arch is None and model in OPENAI_NAMES.values():
        arch = model
    if arch is None:
        raise get_registry().unknown_model("clip", model)
    if pretrained is None or str(pretrained) == "openai" or os.path.exists(str(pretrained)):
        # OpenAI's checkpoints (the tag or a file clip.load cached) use QuickGELU; other tags
        # say themselves whether they do
        options.setdefault("quick_gelu", True)
    return load_open_clip(
        arch, pretrained if pretrained is not None else "openai", device, dtype,
        display_name=f"clip:{model}", prefix="clip", **options,
    )


# ------------------------------------------------------------------------------------------


def _is_stream_vit(visual) -> bool:
    """Whether the residual-stream adapter covers this image tower.

    Asks the adapter itself (it validates pooling, attention type and every block), so the
    capability is declared exactly when ``residual_stream()`` will work. Without the adapter
    module, falls back to the structural test: plain pre-LN ViT blocks, class-token pooling.
    """
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        return False
    try:
        from .vit_stream import OpenClipViTStream
    except ImportError:
        OpenClipViTStream = None
    if OpenClipViTStream is not None:
        try:
            stream = OpenClipViTStream(visual)
            for i in range(stream.num_layers):
                stream.block(i)
        except InterpError:
            return False
        return True
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        return False
    blocks = list(visual.transformer.resblocks)
    return bool(blocks) and all(
        type(b) is ResidualAttentionBlock and isinstance(b.attn, torch.nn.MultiheadAttention)
        for b in blocks
    )


class OpenClipBackbone(TorchBackbone):
    """An open_clip CLIP model: image and text towers, layer features, Grad-CAM targets.

    ``features()`` defaults to layer ``visual`` (the image embedding before normalization).
    Grad-CAM targets: ``visual.layer4`` for ResNet towers; for ViT towers the last block's
    ``ln_1`` together with :meth:`gradcam_reshape_transform` (tokens -> (N, C, h, w)).
    """

    def __init__(self, name, model, **kwargs):
        visual = model.visual
        caps = {Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER}
        gradcam: list[str] = []
        self._vit = False
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        if isinstance(visual, VisionTransformer):
            self._vit = True
            last = len(visual.transformer.resblocks) - 1
            gradcam = [f"visual.transformer.resblocks.{last}.ln_1"]
            if _is_stream_vit(visual):
                caps.add(Capability.VIT_RESIDUAL_STREAM)
        elif isinstance(visual, ModifiedResNet):
            gradcam = ["visual.layer4"]
        else:  # timm trunks (ConvNeXt, ...): the last stage when there is one
            trunk = getattr(visual, "trunk", None)
            stages = getattr(trunk, "stages", None)
            if stages is not None and len(stages):
                gradcam = [f"visual.trunk.stages.{len(stages) - 1}"]
        if gradcam:
            caps.add(Capability.FEATURE_MAPS)
        embed_dim = getattr(visual, "output_dim", None)
        if embed_dim is None:
            proj = getattr(model, "text_projection", None)
            embed_dim = proj.shape[1] if isinstance(proj, torch.Tensor) else None
        super().__init__(
            name, model, embed_dim=embed_dim, capabilities=caps, default_layer="visual",
            gradcam_layers=gradcam, **kwargs,
        )
        if self.embed_dim is None:
            with torch.no_grad():
                size = getattr(visual, "image_size", (224, 224))
                size = (size, size) if isinstance(size, int) else tuple(size)
                probe = torch.zeros(1, 3, *size, device=self.device, dtype=self.dtype)
                self.embed_dim = int(self._encode_image(probe).shape[-1])

    def _encode_image(self, pixels):
        return self.model.encode_image(pixels)

    def _encode_text(self, tokens):
        return self.model.encode_text(tokens)

    @property
    def image_size(self) -> tuple[int, int]:
        size = getattr(self.model.visual, "image_size", 224)
        return (size, size) if isinstance(size, int) else tuple(size)

    def gradcam_reshape_transform(self):
        """For ViT towers: (N, 1 + h*w, C) block activations -> (N, C, h, w) maps; else None."""
        if not self._vit:
            return None
        grid = tuple(self.model.visual.grid_size)
        return _TokensToMap(grid)

    def residual_stream(self):
        if Capability.VIT_RESIDUAL_STREAM not in self.capabilities:
            return super().residual_stream()
        try:
            from .vit_stream import OpenClipViTStream
        except ImportError as exc:
            raise InterpError(
                f"the ViT residual-stream adapter for open_clip is not available ({exc})"
            ) from None
        return OpenClipViTStream(self.model.visual)


class _TokensToMap:
    """Grad-CAM reshape transform: drop leading non-patch tokens, lay the patches on the grid."""

    def __init__(self, grid):
        self.grid = grid

    def __call__(self, tensor):
        h, w = self.grid
        x = tensor[:, -h * w :, :]
        return x.reshape(x.shape[0], h, w, x.shape[-1]).permute(0, 3, 1, 2)
