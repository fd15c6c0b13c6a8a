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
from .errors import CapabilityError, InterpError, InterpWarning

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


_MAX_PIXELS_ENV = "INTERP_MAX_IMAGE_PIXELS"


def load_image(image):
    """A PIL RGB image from a PIL image, a path, or an (H, W), (H, W, 1|3|4) array.

    Conversions (the same for files, PIL images and arrays):

    * 16-bit greyscale (``I;16``) is scaled from 0..65535 to 8 bits, so a 16-bit scan is not
      clipped to white; 32-bit integer (``I``) and float (``F``) images by the smallest range
      that holds their values: 0..1 (floats only), 0..255, 0..65535, else 0..their maximum;
    * palette images, with or without a transparent colour, CMYK, YCbCr, LAB, HSV: PIL's own
      conversion to RGB;
    * transparency (LA, RGBA, PA, a palette's transparent index) is composited on a **white**
      background (what a browser or viewer shows), never dropped to the hidden colours;
    * EXIF orientation is applied (a phone photo comes out upright);
    * an animated file (GIF, APNG, WebP, multi-page TIFF) gives its first frame, with an
      :class:`~interpcore.errors.InterpWarning` saying so;
    * images larger than PIL's decompression-bomb limit (about 89 megapixels;
      ``INTERP_MAX_IMAGE_PIXELS`` changes it) are refused with an :class:`InterpError`
      before they are decoded.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return _to_rgb(image, str(getattr(image, "filename", "") or "image"))
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise InterpError(f"image file not found: {path}")
        if path.is_dir():
            raise InterpError(f"{path} is a folder, not an image file")
        limit = os.environ.get(_MAX_PIXELS_ENV, "").strip()
        old_limit = Image.MAX_IMAGE_PIXELS
        try:
            if limit:
                try:
                    Image.MAX_IMAGE_PIXELS = int(limit) if int(limit) > 0 else None
                except ValueError:
                    raise InterpError(f"{_MAX_PIXELS_ENV}={limit!r} is not a whole number") from None
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    return _to_rgb(im, str(path))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InterpError(
                f"{path} is refused as a possible decompression bomb ({exc}); if the image is "
                f"genuine, resize it or set {_MAX_PIXELS_ENV} to a larger number of pixels"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InterpError(f"{path} is not an image that can be read ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    if hasattr(image, "shape") and hasattr(image, "dtype") and len(image.shape) in (2, 3):
        return _array_to_rgb(image)
    raise InterpError(
        f"expected a PIL image, a path or an HxWx3 array, got {type(image).__name__}"
        + (f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else "")
    )


def _to_rgb(im, where: str):
    """``im`` (any PIL mode, possibly animated or rotated by EXIF) as an RGB image."""
    import warnings

    from PIL import Image, ImageOps

    frames = getattr(im, "n_frames", 1) or 1
    if frames > 1:
        warnings.warn(f"{where} has {frames} frames (animated or multi-page); using the first",
                      InterpWarning, stacklevel=3)
        im.seek(0)
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - a broken EXIF block: keep the pixels as stored
        pass
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        import numpy as np

        return _array_to_rgb(np.asarray(im), where)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _array_to_rgb(array, where: str = "the array"):
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any numeric type as RGB."""
    import numpy as np
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        pass
    elif a.ndim == 2:
        a = a[..., None]
    else:
        raise InterpError(
            f"{where} has shape {tuple(a.shape)}; an image array is (H, W), (H, W, 1), (H, W, 3) "
            "or (H, W, 4) (a (C, H, W) tensor goes to the backbone as pixels)"
        )
    if a.size == 0:
        raise InterpError(f"{where} is empty (shape {tuple(a.shape)})")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == bool:
        u8 = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.number):
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise InterpError(f"{where} has NaN or infinite values")
        if f.min() < 0:
            raise InterpError(f"{where} has negative values (min {f.min():g}); image values "
                              "are 0..255, 0..65535 or 0..1")
        top = f.max()
        if np.issubdtype(a.dtype, np.floating) and top <= 1.0:
            scale = 1.0
        elif a.dtype.kind in "ui" and a.dtype.itemsize == 2:
            scale = 65535.0  # 16-bit data: its range, even for a dark image
        elif top <= 255:
            scale = 255.0
        elif top <= 65535:
            scale = 65535.0
        else:
            scale = top
        u8 = np.clip(np.rint(f * (255.0 / scale)), 0, 255).astype(np.uint8)
    else:
        raise InterpError(f"{where} has values of type {a.dtype}, not numbers")
    if u8.shape[-1] == 1:
        return Image.fromarray(np.repeat(u8, 3, axis=-1), "RGB")
    if u8.shape[-1] == 4:
        return _to_rgb(Image.fromarray(np.ascontiguousarray(u8), "RGBA"), where)
    return Image.fromarray(np.ascontiguousarray(u8), "RGB")


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
    #: The images the model was trained on, for a warning when an input is far from them:
    #: ``{"size": side in pixels of its (square) training images, "what": a description,
    #: "hint": what to do instead}``; None (the default): no check. Set by backbone plugins.
    image_domain: dict | None = None

    def preprocess(self, image) -> torch.Tensor:
        if self.transform is None:
            raise InterpError(f"backbone '{self.name}' has no image preprocessing")
        pil = load_image(image)
        if self.image_domain:
            self._warn_out_of_domain(pil, image)
        return self.transform(pil)

    def _warn_out_of_domain(self, pil, source) -> None:
        """One :class:`InterpWarning` per backbone for an image whose size or shape is far
        from the training images the backbone's ``image_domain`` describes: a side over 4x
        the training side, or, for image files, a side under half of it or an aspect ratio
        over 1.5. Pixels are not judged: the sizes are what the backbone can state without a
        model of its world."""
        if self.__dict__.get("_domain_warned"):
            return
        dom = self.image_domain or {}
        try:
            side = float(dom["size"])
        except (KeyError, TypeError, ValueError):
            return
        w, h = pil.size
        # Crops (FALCON's Grad-CAM boxes) are small and oblong by design: only files the user
        # names are judged by small sides and aspect ratio; anything is judged by a large side.
        is_file = isinstance(source, (str, os.PathLike))
        far = max(w, h) > 4 * side or (is_file and (min(w, h) < side / 2 or max(w, h) > 1.5 * min(w, h)))
        if not far:
            return
        import warnings

        self.__dict__["_domain_warned"] = True
        label = str(source) if isinstance(source, (str, os.PathLike)) else "an input image"
        hint = f"; {dom['hint']}" if dom.get("hint") else ""
        warnings.warn(
            f"{label} ({w} x {h}) is far from the images {self.name} was trained on "
            f"({dom.get('what') or f'{int(side)} x {int(side)} pixels'}): its results may mean "
            f"little{hint}", InterpWarning, stacklevel=3)

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
        self._check_pixels(pixels)
        return pixels.to(self.device, self.dtype)

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        """Refuse pixel tensors the model would fail on deep inside (or, for NaN, silently)."""
        if not (pixels.is_floating_point()):
            raise InterpError(
                f"pixels must be a float tensor (this backbone's preprocess output), got "
                f"{str(pixels.dtype).replace('torch.', '')}; pass image files or PIL images to be converted"
            )
        if pixels.numel() and not torch.isfinite(pixels).all():
            raise InterpError("pixels contain NaN or infinite values; check the code that made them")
        want = self.pixel_shape
        if want is None or pixels.numel() == 0:
            return
        fixed = getattr(self, "fixed_input_size", None)
        if fixed is None:
            fixed = Capability.VIT_RESIDUAL_STREAM in self.capabilities  # ViTs: positional embeddings
        got = tuple(pixels.shape[1:])
        if got[0] != want[0] or (fixed and got != want):
            raise InterpError(
                f"pixels of shape {got} do not fit backbone '{self.name}', which takes {want} "
                "(channels, height, width); pass image files or PIL images (they are resized), "
                "or resize the tensor"
            )

    @property
    def pixel_shape(self) -> tuple | None:
        """(C, H, W) that ``preprocess`` gives, found once by running the transform on a small
        image; None when there is no transform or it does not give a 3-d tensor."""
        if "_pixel_shape" not in self.__dict__:
            shape = None
            if self.transform is not None:
                try:
                    from PIL import Image

                    out = self.transform(Image.new("RGB", (97, 83), (127, 127, 127)))
                    if isinstance(out, torch.Tensor) and out.dim() == 3:
                        shape = tuple(out.shape)
                except Exception:  # noqa: BLE001 - an unusual transform: no check
                    shape = None
            self.__dict__["_pixel_shape"] = shape
        return self.__dict__["_pixel_shape"]

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
