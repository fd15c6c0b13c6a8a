"""A PyTorch implementation of the :class:`~interpcore.base.Backbone` interface.

Backbone plugins wrap their library's model in a :class:`TorchBackbone` subclass and
override the two model-specific methods ``_encode_image`` / ``_encode_text``; device and
dtype handling, image loading, batching without gradients and layer features come from here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .base import Backbone, Capability
from .errors import CapabilityError, InterpError

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InterpError(f"device '{device}' was asked for, but CUDA is not available here")
    return device


def resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InterpError(f"unknown dtype '{dtype}'; use one of fp32, fp16, bf16") from None


def load_image(image):
    """A PIL RGB image from a PIL image, a path, or an (H, W, 3) uint8 array."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise InterpError(f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InterpError(f"{path} is not an image that can be read ({exc})") from None
    if hasattr(image, "shape") and len(image.shape) == 3:
        import numpy as np

        return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    raise InterpError(f"expected a PIL image, a path or an HxWx3 array, got {type(image).__name__}")


class TorchBackbone(Backbone):
    """Shared machinery for torch backbones.

    Parameters
    ----------
    name, pretrained: registry name and the weights it was loaded from.
    model: the ``torch.nn.Module`` (moved to ``device`` / ``dtype`` and put in eval mode).
    transform: callable PIL image -> (C, H, W) tensor (the model's preprocessing).
    tokenizer: callable list[str] -> token tensor, for backbones with a text tower.
    default_layer: module name whose output ``features()`` returns by default (the pooled
        layer before the classifier). ``pool_features``: average spatial maps to vectors.
    gradcam_layers: module names pytorch-grad-cam should target by default.
    """

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        *,
        pretrained=None,
        device="auto",
        dtype=None,
        transform=None,
        tokenizer=None,
        embed_dim: int | None = None,
        capabilities: Sequence[str] = (),
        default_layer: str | None = None,
        gradcam_layers: Sequence[str] = (),
    ):
        self.name = name
        self.pretrained = None if pretrained is None else str(pretrained)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if self.dtype == torch.float16 and self.device.type == "cpu":
            # fp16 matmuls are slow or missing on many CPUs; keep weights fp32 there.
            self.dtype = torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.transform = transform
        self.tokenizer = tokenizer
        self.embed_dim = embed_dim
        caps = set(capabilities)
        if tokenizer is None and Capability.TEXT_ENCODER in caps:
            import warnings

            warnings.warn(f"backbone '{name}' declares text_encoder but was given no tokenizer: "
                          "text encoding is off", stacklevel=2)
            caps.discard(Capability.TEXT_ENCODER)
        self.capabilities = frozenset(caps)
        self.default_layer = default_layer
        self.gradcam_layers = list(gradcam_layers)

    # -- model-specific -----------------------------------------------------------------
    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise CapabilityError(self.name, Capability.IMAGE_ENCODER, "encode_image")

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise CapabilityError(self.name, Capability.TEXT_ENCODER, "encode_text")

    # -- inputs -------------------------------------------------------------------------
    def preprocess(self, image) -> torch.Tensor:
        if self.transform is None:
            raise InterpError(f"backbone '{self.name}' has no image preprocessing")
        return self.transform(load_image(image))

    def to_pixels(self, images) -> torch.Tensor:
        """A batch on this backbone's device and dtype from tensors, PIL images or paths."""
        if isinstance(images, torch.Tensor):
            pixels = images if images.dim() == 4 else images.unsqueeze(0)
        else:
            if not isinstance(images, (list, tuple)):
                images = [images]
            pixels = torch.stack(
                [im if isinstance(im, torch.Tensor) else self.preprocess(im) for im in images]
            )
        if pixels.dim() != 4:
            raise InterpError(f"expected images of shape (N, C, H, W), got {tuple(pixels.shape)}")
        return pixels.to(self.device, self.dtype)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise CapabilityError(self.name, Capability.TEXT_ENCODER, "tokenize")
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    # -- encoders -----------------------------------------------------------------------
    def _batches(self, items, batch_size):
        n = len(items)
        for start in range(0, n, batch_size):
            yield items[start : start + batch_size]

    @torch.no_grad()
    def encode_image(self, images, *, normalize: bool = False, batch_size: int = 64):
        if Capability.IMAGE_ENCODER not in self.capabilities:
            raise CapabilityError(self.name, Capability.IMAGE_ENCODER, "encode_image")
        if not isinstance(images, (torch.Tensor, list, tuple)):
            images = [images]
        outs = [self._encode_image(self.to_pixels(b)).float() for b in self._batches(images, batch_size)]
        z = torch.cat(outs) if outs else torch.empty(0, self.embed_dim or 0)
        return torch.nn.functional.normalize(z, dim=-1) if normalize else z

    @torch.no_grad()
    def encode_text(self, texts, *, normalize: bool = False, batch_size: int = 256):
        if Capability.TEXT_ENCODER not in self.capabilities:
            raise CapabilityError(self.name, Capability.TEXT_ENCODER, "encode_text")
        if isinstance(texts, str):
            texts = [texts]
        outs = []
        for b in self._batches(texts, batch_size):
            tokens = b if isinstance(b, torch.Tensor) else self.tokenize(b)
            outs.append(self._encode_text(tokens.to(self.device)).float())
        z = torch.cat(outs) if outs else torch.empty(0, self.embed_dim or 0)
        return torch.nn.functional.normalize(z, dim=-1) if normalize else z

    # -- layers -------------------------------------------------------------------------
    def feature_layers(self) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n]

    def module(self, layer: str) -> torch.nn.Module:
        try:
            return self.model.get_submodule(layer)
        except AttributeError:
            from .errors import close_matches

            near = close_matches(layer, self.feature_layers())
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            raise InterpError(f"backbone '{self.name}' has no layer '{layer}'.{hint}") from None

    def _forward_for_features(self, pixels: torch.Tensor):
        """Run the model so that hooked layers fire (image tower only for CLIP models)."""
        if Capability.IMAGE_ENCODER in self.capabilities:
            return self._encode_image(pixels)
        return self.model(pixels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image forward pass with autograd on (see :meth:`Backbone.forward`)."""
        with torch.enable_grad():
            if Capability.IMAGE_ENCODER in self.capabilities:
                return self._encode_image(pixels)
            return self.model(pixels)

    def forward_features(self, pixels: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """Activations of ``layer`` with autograd on, unpooled (see :meth:`Backbone.forward_features`).

        A default layer that is computed rather than a module (e.g. timm's ``pre_logits``)
        is the image encoder's own output.
        """
        layer = layer or self.default_layer
        if layer is None:
            raise InterpError(f"backbone '{self.name}' has no default feature layer; pass layer=")
        try:
            mod = self.module(layer)
        except InterpError:
            if layer != self.default_layer or Capability.IMAGE_ENCODER not in self.capabilities:
                raise
            return self.forward(pixels)
        with torch.enable_grad(), capture(mod) as got:
            self._forward_for_features(pixels)
        if not got:
            raise InterpError(f"layer '{layer}' of backbone '{self.name}' did not run in the "
                              "image forward pass")
        return got[0]

    @torch.no_grad()
    def features(self, images, layer: str | None = None, *, batch_size: int = 64, pool: bool | None = None):
        """Activations of ``layer`` (default: the pooled layer before the classifier).

        Spatial maps ``(N, C, H, W)`` are average-pooled to ``(N, C)`` when ``pool`` is true
        (the default for the default layer); token sequences are returned as they are.
        """
        layer = layer or self.default_layer
        if layer is None:
            raise InterpError(f"backbone '{self.name}' has no default feature layer; pass layer=")
        if pool is None:
            pool = layer == self.default_layer
        if not isinstance(images, (torch.Tensor, list, tuple)):
            images = [images]
        outs = []
        for b in self._batches(images, batch_size):
            with capture(self.module(layer)) as got:
                self._forward_for_features(self.to_pixels(b))
            act = got[0]
            if pool and act.dim() == 4:
                act = act.mean(dim=(2, 3))
            outs.append(act.float())
        return torch.cat(outs)

    def gradcam_target_layers(self) -> list[torch.nn.Module]:
        if Capability.FEATURE_MAPS not in self.capabilities or not self.gradcam_layers:
            raise CapabilityError(self.name, Capability.FEATURE_MAPS, "gradcam_target_layers")
        return [self.module(n) for n in self.gradcam_layers]

    def gradcam_reshape_transform(self):
        """pytorch-grad-cam's ``reshape_transform`` for the target layers, or ``None``.

        ``None`` means the targets already give ``(N, C, H, W)`` maps (CNN stages); ViT
        backbones return a callable that turns ``(N, tokens, C)`` into ``(N, C, h, w)``.
        """
        return None

    @property
    def cache_key(self) -> str:
        """Name and weights; for a weights file also its size and modification time, so a
        checkpoint overwritten in place does not reuse caches computed with the old one."""
        key = f"{self.name}|{self.pretrained}"
        if self.pretrained and os.path.isfile(self.pretrained):
            st = os.stat(self.pretrained)
            key += f"|{st.st_size}|{st.st_mtime_ns}"
        return key


@contextlib.contextmanager
def capture(module: torch.nn.Module):
    """Collect a module's outputs while the context is open; the hook is always removed."""
    got: list[torch.Tensor] = []

    def hook(_mod, _inp, out):
        got.append(out[0] if isinstance(out, tuple) else out)

    handle = module.register_forward_hook(hook)
    try:
        yield got
    finally:
        handle.remove()
