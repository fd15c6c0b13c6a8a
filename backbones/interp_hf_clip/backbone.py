"""transformers CLIP (and SigLIP) dual encoders behind the interpcore Backbone interface.

``hf:<repo id or local folder>`` loads ``CLIPModel`` (or ``SiglipModel``) with the repo's
image processor and tokenizer. Imports torch and transformers; the plugin's ``__init__``
imports this module only when a model is asked for.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from interpcore import Capability, InterpError, OfflineError
from interpcore.progress import is_quiet
from interpcore.torch_backbone import TorchBackbone
from interpcore.weights import hf_cache_dir, load_checked, read_state_dict
from interpcore.download import no_network as offline, why_no_network

#: model_type in config.json -> (model class, what the family is called in messages)
_FAMILIES = {
    "clip": ("CLIPModel", "CLIP"),
    "siglip": ("SiglipModel", "SigLIP"),
}


@contextlib.contextmanager
def _hf_quiet():
    """No 'Loading weights' bars under --quiet / non-tty (transformers has its own switch)."""
    from transformers.utils import logging as hf_logging

    if not is_quiet():
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _read_config(source: str, what: str, cache_dir):
    """The transformers config of a repo id or folder, local cache first, with one offline message."""
    from transformers import AutoConfig

    is_dir = os.path.isdir(source)
    if not is_dir and (source.startswith((".", "/", "~")) or os.sep in source.strip("/").replace("/", "", 1)):
        raise InterpError(f"model folder for {what} not found: {source}")
    try:
        return AutoConfig.from_pretrained(source, local_files_only=True, cache_dir=cache_dir), True
    except Exception as local_exc:  # noqa: BLE001
        if is_dir:
            raise InterpError(
                f"{source} is not a transformers model folder for {what} ({_first_line(local_exc)}); "
                "it needs a config.json written by save_pretrained"
            ) from None
    if offline():
        raise _offline_error(source, what, cache_dir, why_no_network())
    try:
        return AutoConfig.from_pretrained(source, cache_dir=cache_dir), False
    except Exception as exc:  # noqa: BLE001
        text = _first_line(exc)
        if "is not a local folder and is not a valid model identifier" in str(exc):
            raise InterpError(
                f"unknown transformers model '{source}' for {what}: not a local folder and not a "
                "Hugging Face repo id (e.g. openai/clip-vit-base-patch32)"
            ) from None
        raise _offline_error(source, what, cache_dir, f"the download failed ({text})") from None


def _first_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _offline_error(repo: str, what: str, cache_dir, why: str) -> OfflineError:
    return OfflineError(
        f"cannot get {what}: the Hugging Face repo '{repo}' is not in the cache "
        f"{hf_cache_dir(cache_dir)} and {why}. To supply it by hand, run "
        f"`hf download {repo}` on a machine with internet and copy that cache here "
        f"(point HF_HOME / HF_HUB_CACHE at it), or save the model to a folder "
        f"(CLIPModel.save_pretrained + the processor) and use hf:/path/to/folder."
    )


def load_hf_clip(
    model: str,
    pretrained=None,
    device="auto",
    dtype=None,
    *,
    display_name: str | None = None,
    cache_dir=None,
    revision: str | None = None,
    **unknown,
) -> HFClipBackbone:
    """``hf:<repo id or folder>``.

    ``pretrained``: ``None`` (the repo's own weights), a local folder that replaces the repo
    (the same repo saved by hand), or a checkpoint file (.safetensors / .bin, transformers
    key layout) loaded into the repo's architecture; ``"random"`` keeps random weights.
    """
    import transformers

    display_name = display_name or f"hf:{model}"
    if unknown:
        raise InterpError(
            f"{display_name}: unknown option(s) {', '.join(sorted(unknown))}; the hf: loader takes "
            "pretrained, device, dtype, cache_dir, revision, display_name"
        )
    source = str(Path(model).expanduser()) if os.path.isdir(os.path.expanduser(model)) else model
    weights_file = None
    random_init = str(pretrained).lower() in ("random", "none", "scratch") if pretrained is not None else False
    if pretrained is not None and not random_init:
        p = Path(str(pretrained)).expanduser()
        if p.is_dir():
            source = str(p)
        elif p.is_file():
            weights_file = p
        else:
            raise InterpError(f"--pretrained (pretrained=) for {display_name} is neither a folder nor a file: {pretrained}")
    what = f"{display_name}" + (f" (pretrained '{pretrained}')" if pretrained is not None else "")
    config, _local = _read_config(source, what, cache_dir)
    family = _FAMILIES.get(getattr(config, "model_type", ""))
    if family is None:
        raise InterpError(
            f"{display_name} is a '{config.model_type}' model; the hf: backbones cover "
            f"dual encoders of type {', '.join(sorted(_FAMILIES))} (CLIPModel, SiglipModel)"
        )
    cls = getattr(transformers, family[0])
    kwargs = {"cache_dir": cache_dir, "revision": revision}
    try:
        with _hf_quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if weights_file is not None or random_init:
                net = cls(config)
            else:
                net = _from_pretrained(cls, source, what, kwargs)
    except InterpError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InterpError(f"transformers could not build {what}: {_first_line(exc)}") from None
    if weights_file is not None:
        state = read_state_dict(weights_file, what=display_name)
        load_checked(
            net, state, what=display_name, source=weights_file,
            ignore_missing=("*position_ids",), ignore_unexpected=("*position_ids",),
        )
    net = net.float().eval()
    transform = _image_transform(source, config, kwargs)
    tokenizer, why = _tokenizer(source, config, kwargs)
    if tokenizer is None:
        warnings.warn(f"{display_name}: no tokenizer could be loaded ({why}); text encoding is off", stacklevel=2)
    label = "random" if random_init else (str(pretrained) if pretrained is not None else source)
    return HFClipBackbone(
        display_name, net, family=family[1], pretrained=label, device=device, dtype=dtype,
        transform=transform, tokenizer=tokenizer,
    )


def _from_pretrained(cls, source, what, kwargs):
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except Exception as local_exc:  # noqa: BLE001
        if os.path.isdir(source):
            raise InterpError(f"{source} holds no loadable weights for {what} ({_first_line(local_exc)})") from None
        if offline():
            raise _offline_error(source, what, kwargs.get("cache_dir"), why_no_network()) from None
    try:
        return cls.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _offline_error(source, what, kwargs.get("cache_dir"), f"the download failed ({_first_line(exc)})") from None


def _image_transform(source, config, kwargs):
    """The repo's image processor as a PIL -> (3, H, W) callable; CLIP defaults without one."""
    from transformers import AutoImageProcessor

    processor = None
    for local_only in (True, False):
        if not local_only and offline():
            break
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only, **kwargs)
            break
    if processor is not None:
        return _ProcessorTransform(processor)
    # no preprocessor_config.json: CLIP's published preprocessing at the tower's resolution
    from torchvision import transforms as T

    size = config.vision_config.image_size
    if config.model_type == "siglip":
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        resize = T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC)
        return T.Compose([resize, T.ToTensor(), T.Normalize(mean, std)])
    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)
    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
        T.ToTensor(), T.Normalize(mean, std),
    ])


class _ProcessorTransform:
    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        out = self.processor(images=image, return_tensors="pt")
        return out["pixel_values"][0]


def _tokenizer(source, config, kwargs):
    from transformers import AutoTokenizer

    last = "no tokenizer files"
    tok = None
    for local_only in (True, False):
        if not local_only and offline():
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **kwargs)
            break
        except Exception as exc:  # noqa: BLE001
            last = _first_line(exc)
    if tok is None:
        return None, last
    length = config.text_config.max_position_embeddings
    return _Tokenize(tok, length), ""


class _Tokenize:
    """list[str] -> (N, context) ids, padded to the context length as the models were trained."""

    def __init__(self, tok, length):
        self.tok, self.length = tok, length

    def __call__(self, texts):
        out = self.tok(list(texts), padding="max_length", max_length=self.length, truncation=True, return_tensors="pt")
        return out["input_ids"]


class HFClipBackbone(TorchBackbone):
    """A transformers CLIPModel / SiglipModel.

    ``features()`` defaults to ``visual_projection`` (CLIP: the image embedding) or
    ``vision_model.head`` (SigLIP: the pooled embedding). Grad-CAM targets the last encoder
    layer's ``layer_norm1`` with :meth:`gradcam_reshape_transform`. CLIP towers (class-token
    pooling) have the ViT residual stream; SigLIP's attention-pooling head does not.
    """

    def __init__(self, name, model, *, family="CLIP", **kwargs):
        self.family = family
        vision = model.vision_model
        layers = len(vision.encoder.layers)
        caps = {Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER, Capability.FEATURE_MAPS}
        if kwargs.get("tokenizer") is None:
            caps.discard(Capability.TEXT_ENCODER)  # the loader has already warned, with why
        if family == "CLIP":
            caps.add(Capability.VIT_RESIDUAL_STREAM)
            default = "visual_projection"
            embed_dim = model.config.projection_dim
        else:
            default = "vision_model.head" if getattr(vision, "head", None) is not None else "vision_model.post_layernorm"
            embed_dim = model.config.vision_config.hidden_size
        vc = model.config.vision_config
        self.grid = (vc.image_size // vc.patch_size, vc.image_size // vc.patch_size)
        super().__init__(
            name, model, embed_dim=embed_dim, capabilities=caps, default_layer=default,
            gradcam_layers=[f"vision_model.encoder.layers.{layers - 1}.layer_norm1"], **kwargs,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        s = self.model.config.vision_config.image_size
        return (s, s)

    def _encode_image(self, pixels):
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        if self.family == "CLIP":
            return self.model.visual_projection(pooled)
        return pooled

    def _encode_text(self, tokens):
        pooled = self.model.text_model(input_ids=tokens).pooler_output
        if self.family == "CLIP":
            return self.model.text_projection(pooled)
        return pooled

    def gradcam_reshape_transform(self):
        h, w = self.grid

        def reshape(tensor):
            x = tensor[:, -h * w :, :]
            return x.reshape(x.shape[0], h, w, x.shape[-1]).permute(0, 3, 1, 2)

        return reshape

    def residual_stream(self):
        if Capability.VIT_RESIDUAL_STREAM not in self.capabilities:
            return super().residual_stream()
        try:
            from .vit_stream import HFClipViTStream
        except ImportError as exc:
            raise InterpError(f"the ViT residual-stream adapter for transformers is not available ({exc})") from None
        return HFClipViTStream(self.model.vision_model, self.model.visual_projection, name=self.name)
