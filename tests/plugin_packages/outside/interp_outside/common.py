"""Pieces both backbones share: preprocessing and seeded construction (imports torch)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def transform(image: Image.Image) -> torch.Tensor:
    """PIL image -> (3, 32, 32) float tensor: a plain resize (no crop) and normalisation."""
    image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def seeded(build, seed: int):
    """``build()`` under a fixed torch seed, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_weights(net: torch.nn.Module, pretrained) -> None:
    """``pretrained``: None / "random" keep the seeded weights; else a state-dict file."""
    if pretrained in (None, "random", "seed0"):
        return
    import interpcore
    from pathlib import Path

    path = Path(str(pretrained))
    if not path.is_file():
        raise interpcore.InterpError(
            f"outside backbones know the tag 'random' or a state-dict file; {pretrained!r} is neither.")
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
