"""Architectures of the shapes-world models (torch; imported only when a model is built).

* ``clip-vit``: an open_clip :class:`open_clip.model.CLIP` built from ``configs/clip-vit.json``
  (a 4-layer ViT image tower with patch 4 on 32 x 32 images, and a small text tower that uses
  open_clip's tokenizer).
* ``resnet``: a timm :class:`timm.models.resnet.ResNet` with one BasicBlock per stage, narrow
  channels and a 3 x 3 stride-1 stem for 32 x 32 images (``configs/resnet.json``); its head
  predicts, as independent sigmoids, every colour and every shape present in the image (the
  config's ``labels``).

The models are built here and only loaded by this package; the training recipe, which needs the
world's generator, lives with the world (:mod:`interp_shapes.train`) and gets these
architectures through the registry (``pretrained="random"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interpcore import InterpError

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE / "configs"
WEIGHTS_DIR = HERE / "weights"

CLIP_CONFIG = CONFIG_DIR / "clip-vit.json"
RESNET_CONFIG = CONFIG_DIR / "resnet.json"
CLIP_WEIGHTS = WEIGHTS_DIR / "clip-vit.safetensors"
RESNET_WEIGHTS = WEIGHTS_DIR / "resnet.safetensors"
CLIP_RECORD = WEIGHTS_DIR / "clip-vit.json"
RESNET_RECORD = WEIGHTS_DIR / "resnet.json"

# open_clip's (OpenAI) normalization, used by both models so that one preprocessing fits.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def read_json(path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InterpError(f"model config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise InterpError(f"model config {path} is not valid JSON ({exc})") from None


def build_clip(config: dict | str | Path | None = None):
    """An untrained open_clip CLIP from a config dict or JSON path (default: clip-vit.json)."""
    import open_clip

    cfg = read_json(CLIP_CONFIG if config is None else config) if not isinstance(config, dict) else config
    return open_clip.model.CLIP(**cfg)


def clip_tokenizer(config: dict | None = None):
    """open_clip's BPE tokenizer with the config's context length."""
    from open_clip.tokenizer import SimpleTokenizer

    cfg = config or read_json(CLIP_CONFIG)
    return SimpleTokenizer(context_length=int(cfg["text_cfg"]["context_length"]))


def resnet_label_names(config: dict | str | Path | None = None) -> list[str]:
    """The ResNet's output labels (every colour, then every shape of the shapes world), as
    its config lists them."""
    cfg = read_json(RESNET_CONFIG if config is None else config) if not isinstance(config, dict) else config
    if not cfg.get("labels"):
        raise InterpError("the shapes:resnet config names no output labels ('labels': [...])")
    return list(cfg["labels"])


def build_resnet(config: dict | str | Path | None = None, num_classes: int | None = None):
    from timm.models.resnet import BasicBlock, ResNet

    cfg = read_json(RESNET_CONFIG if config is None else config) if not isinstance(config, dict) else config
    n = num_classes or len(resnet_label_names(cfg))
    stem = int(cfg.get("stem_channels", 64))
    # timm's deep stem sets the stem width to 2 * stem_width; it is replaced just below
    model = ResNet(BasicBlock, layers=tuple(cfg["layers"]), channels=tuple(cfg["channels"]),
                   num_classes=n, output_stride=int(cfg.get("output_stride", 32)),
                   stem_type="deep", stem_width=stem // 2)
    # 32 x 32 inputs: a single 3x3 stride-1 stem conv without max-pooling; with output
    # stride 16 the last stage (dilated) keeps an 8 x 8 map for Grad-CAM
    model.conv1 = torch.nn.Conv2d(3, stem, 3, 1, 1, bias=False)
    model.bn1 = torch.nn.BatchNorm2d(stem)
    model.maxpool = torch.nn.Identity()
    return model


def pixels_from_uint8(images) -> torch.Tensor:
    """(N, H, W, 3) uint8 array/tensor -> normalized (N, 3, H, W) float tensor."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def image_transform(image_size: int = 32):
    """PIL image -> normalized (3, H, W) tensor at the models' resolution."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


def save_state_dict(model: torch.nn.Module, path, *, half: bool = True, metadata=None) -> Path:
    """Write a state dict as safetensors atomically (temporary file, then rename)."""
    from interpcore.cache import save_tensors

    sd = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous()
          for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, sd, metadata=metadata)
    return path


def load_state_dict(path) -> dict:
    from interpcore.cache import load_tensors

    path = Path(path)
    if not path.exists():
        raise InterpError(f"weights file not found: {path}")
    try:
        return load_tensors(path)[0]
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise InterpError(f"weights file {path} could not be read ({exc}); retrain it with "
                          "`interp shapes train`") from None
