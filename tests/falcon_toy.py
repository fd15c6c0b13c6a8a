"""A tiny hand-built colour world for FALCON's tests and examples (no training, no weights).

* :class:`ToyDataset` - 32x32 black images with one coloured square (red, green or blue).
* :func:`toy_target` - a CNN whose channels 0..2 detect red, green and blue pixels (spatial
  maps, so Grad-CAM finds the square) and whose other channels carry a weak constant; the
  default layer is the pooled vector before the classifier.
* :func:`toy_captioner` - a "CLIP" whose image embedding is the colour of the bright pixels
  and whose text embedding is a bag of word vectors in which colour words point along the
  same axes, so retrieval returns captions naming the right colour.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from interpcore import Capability, Dataset
from interpcore.torch_backbone import TorchBackbone

COLOURS = {"red": (230, 30, 30), "green": (30, 220, 30), "blue": (30, 30, 230)}
SIZE = 32


class ToyDataset(Dataset):
    name = "toy-colours"

    def __init__(self, n: int = 90, seed: int = 0, square: int = 10):
        rng = np.random.default_rng(seed)
        names = list(COLOURS)
        self.classes = names
        self.items = []
        for i in range(n):
            c = names[i % 3]
            x, y = (int(v) for v in rng.integers(0, SIZE - square, size=2))
            self.items.append((c, x, y, square))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        c, x, y, s = self.items[i]
        arr = np.zeros((SIZE, SIZE, 3), np.uint8)
        arr[y : y + s, x : x + s] = COLOURS[c]
        return {"image": Image.fromarray(arr), "label": self.classes.index(c),
                "attributes": {"colour": c, "box": (x, y, x + s, y + s)}}


def _to_tensor(im):
    arr = np.asarray(im.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def toy_target(n_features: int = 64) -> TorchBackbone:
    conv = torch.nn.Conv2d(3, n_features, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(0.02)
        for k in range(3):  # channel k: this colour minus the others
            conv.weight[k, :, 0, 0] = -1.0
            conv.weight[k, k, 0, 0] = 2.0
            conv.bias[k] = -0.3
    model = torch.nn.Sequential()
    model.add_module("conv", conv)
    model.add_module("act", torch.nn.ReLU())
    model.add_module("pool", torch.nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("fc", torch.nn.Linear(n_features, 3))
    return TorchBackbone("toy:cnn", model, device="cpu", transform=_to_tensor,
                         capabilities=[Capability.FEATURE_MAPS], default_layer="flat",
                         gradcam_layers=["act"])


_WORD_AXES = {"red": 0, "green": 1, "blue": 2}
_DIM = 16


def _tokenize(texts, length: int = 12):
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [zlib.crc32(w.encode()) % 100000 + 1 for w in t.lower().split()][:length]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


class _ToyClip(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.colour_ids = {zlib.crc32(w.encode()) % 100000 + 1: a for w, a in _WORD_AXES.items()}

    def word_vec(self, tok: int) -> torch.Tensor:
        v = torch.zeros(_DIM)
        if tok in self.colour_ids:
            v[self.colour_ids[tok]] = 1.0
        else:  # other words: a small fixed direction outside the colour axes
            g = torch.Generator().manual_seed(tok)
            v[3:] = torch.randn(_DIM - 3, generator=g) * 0.15
        return v

    def encode_image(self, x):
        bright = (x.amax(dim=1, keepdim=True) > 0.3).float()
        col = (x * bright).sum(dim=(2, 3)) / bright.sum(dim=(2, 3)).clamp_min(1.0)
        col = col - col.mean(dim=1, keepdim=True) * 0.9
        z = torch.zeros(x.shape[0], _DIM)
        z[:, :3] = col
        z[:, 3] = 0.05
        return z

    def encode_text(self, tokens):
        z = torch.zeros(tokens.shape[0], _DIM)
        for i, row in enumerate(tokens.tolist()):
            for t in row:
                if t:
                    z[i] += self.word_vec(t)
        return z


class _ToyClipBackbone(TorchBackbone):
    def _encode_image(self, pixels):
        return self.model.encode_image(pixels)

    def _encode_text(self, tokens):
        return self.model.encode_text(tokens)


def toy_captioner() -> TorchBackbone:
    return _ToyClipBackbone("toy:clip", _ToyClip(), device="cpu", transform=_to_tensor,
                            tokenizer=_tokenize, embed_dim=_DIM,
                            capabilities=[Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER])


def toy_captions() -> list[str]:
    """Caption pool: every colour with several nouns and some boilerplate, plus distractors."""
    out = []
    for c in COLOURS:
        for noun in ("square", "box", "tile", "block"):
            out += [f"a {c} {noun}", f"stock photo of a {c} {noun} on black",
                    f"{c} {noun} isolated", f"a {c} {noun}"]  # last one: exact duplicate
    out += ["a black background", "an empty dark room", "night sky without stars"]
    return out
