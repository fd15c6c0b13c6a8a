"""A toy CLIP whose answers are known, for tests and for trying SpLiCE without weights.

``toy:clip`` embeds an image from its mean colour: the closer the colour is to one of the
palette's colours, the closer the embedding is to that colour word's text embedding. Text
embeddings are sums of fixed random word vectors. Image and text embeddings each carry their
own offset (a "modality gap", which SpLiCE's mean-centring removes). So a red image should
decompose into "red" (and maybe its neighbours), whatever the vocabulary around it.

Register it in a process with ``get_registry().register_plugin(ToyPlugin(), "splice-toy")``:
backbone ``toy:clip``, dataset ``toy-colours`` (solid colour images with a little noise,
labelled by colour) and vocabulary ``toy-words``.
"""

from __future__ import annotations

import hashlib

import interpcore

PALETTE = {
    "red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 240), "yellow": (240, 230, 30),
    "purple": (140, 30, 200), "orange": (250, 140, 10), "pink": (250, 110, 200),
    "cyan": (10, 230, 230), "white": (245, 245, 245), "black": (15, 15, 15),
}
OTHER_WORDS = ["dog", "car", "tree", "house", "music", "river", "chair", "cloud", "phone", "bread",
               "shape", "colour", "bright", "dark", "paint"]
DIM = 32


def _word_seed(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")


def _build_model(dim: int = DIM):
    import torch

    class ToyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1234)
            names = list(PALETTE)
            self.words = names + OTHER_WORDS
            self.register_buffer("palette", torch.tensor([PALETTE[n] for n in names]).float() / 255)
            self.register_buffer("table", torch.randn(len(self.words), dim, generator=g))
            self.register_buffer("img_offset", 1.5 * torch.randn(dim, generator=g))
            self.register_buffer("txt_offset", 1.5 * torch.randn(dim, generator=g))
            self.proj = torch.nn.Linear(dim, dim, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(dim) + 0.05 * torch.randn(dim, dim, generator=g))

        def encode_image(self, pixels):
            m = pixels.float().mean(dim=(2, 3))  # mean colour (N, 3)
            d2 = ((m[:, None, :] - self.palette[None]) ** 2).sum(-1)
            p = torch.softmax(-d2 * 30.0, dim=1)
            k = self.palette.shape[0]
            return self.proj(p @ self.table[:k] + self.img_offset)

        def encode_text(self, tokens):
            ids = tokens.clamp_min(0)
            vec = self.table_for(ids)
            mask = (tokens >= 0).float()[..., None]
            return self.proj((vec * mask).sum(1) + self.txt_offset)

        def table_for(self, ids):
            n = len(self.words)
            known = ids < n
            out = self.table[ids.clamp_max(n - 1)]
            if bool((~known).any()):  # unknown words: a fixed random vector per hash
                g = torch.Generator().manual_seed(0)
                extra = torch.randn(256, self.table.shape[1], generator=g).to(out)
                out = torch.where(known[..., None], out, extra[(ids - n).clamp_min(0) % 256])
            return out

    return ToyNet().eval()


class _Tokenizer:
    def __init__(self, words, length: int = 8):
        self.index = {w: i for i, w in enumerate(words)}
        self.length = length

    def __call__(self, texts):
        import torch

        out = torch.full((len(texts), self.length), -1, dtype=torch.long)
        for i, t in enumerate(texts):
            toks = str(t).lower().replace(",", " ").split()[: self.length]
            for j, w in enumerate(toks):
                out[i, j] = self.index.get(w, len(self.index) + _word_seed(w) % 256)
        return out


def load_toy(model: str = "clip", *, pretrained=None, device="auto", dtype=None, **options):
    """The ``toy:clip`` backbone (random but fixed weights; ``pretrained`` is ignored)."""
    from interpcore import Capability
    from interpcore.torch_backbone import TorchBackbone

    if model != "clip":
        raise interpcore.get_registry().unknown_model("toy", model)
    net = _build_model()

    def transform(im):
        import numpy as np
        import torch

        a = np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1).contiguous()

    class ToyBackbone(TorchBackbone):
        def _encode_image(self, pixels):
            return self.model.encode_image(pixels)

        def _encode_text(self, tokens):
            return self.model.encode_text(tokens)

    return ToyBackbone(
        "toy:clip", net, pretrained=pretrained, device=device, dtype=dtype, transform=transform,
        tokenizer=_Tokenizer(net.words), embed_dim=DIM,
        capabilities=(Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER),
    )


def colour_image(name: str, seed: int = 0, size: int = 16, noise: float = 12.0):
    """A PIL image of one palette colour with a little pixel noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array(PALETTE[name], dtype=np.float32)
    a = base[None, None, :] + rng.normal(0, noise, size=(size, size, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


class ToyColours(interpcore.Dataset):
    """Solid colour images labelled by colour (``classes`` = the palette's names)."""

    name = "toy-colours"
    classes = list(PALETTE)

    def __init__(self, split: str = "test", n: int = 60, seed: int = 0):
        self.split, self.n, self.seed = split, int(n), int(seed) + (0 if split == "test" else 10_000)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        label = i % len(self.classes)
        return {"image": colour_image(self.classes[label], self.seed + i), "label": label, "index": i}


def toy_vocabulary(size=None, **options):
    words = list(PALETTE) + OTHER_WORDS
    return interpcore.Vocabulary("toy-words", words[-size:] if size else words, "generated")


class ToyPlugin:
    """An in-process plugin with the toy backbone, dataset and vocabulary."""

    @interpcore.hookimpl
    def register_backbones(self, register):
        register("toy", load_toy, list_models=lambda: ["clip"], description="toy CLIP (tests)")

    @interpcore.hookimpl
    def register_datasets(self, register):
        register("toy-colours", lambda split="test", **o: ToyColours(split, **o),
                 description="solid colour images (tests)")

    @interpcore.hookimpl
    def register_vocabularies(self, register):
        register("toy-words", toy_vocabulary, description="colour words and a few others (tests)")
