"""outside:clip: a tiny CLIP-like model written from scratch, randomly initialised (seed 0).

Image tower: a pre-LayerNorm ViT with class-token pooling (patch 8 on 32 x 32 images, so a
4 x 4 grid and 17 tokens; width 32, 4 heads of 8, 2 blocks with layer scale, final
LayerNorm on the class token and a projection to 24 dimensions). Text tower: a bag of
words (an EmbeddingBag over a fixed word list, mean-pooled, then a small MLP into the same
24 dimensions). The residual stream exposes the image tower's own tensors, as
docs/plugins.md ("The ViT residual stream") describes.
"""

from __future__ import annotations

import re

import torch
from torch import nn

import interpcore
from interpcore import Capability, ViTBlockParts, ViTResidualStream
from interpcore.torch_backbone import TorchBackbone

from .common import IMAGE_SIZE, load_weights, seeded, transform
from .words import WORDS

PATCH = 8
WIDTH = 32
HEADS = 4
LAYERS = 2
EMBED_DIM = 24
CONTEXT = 16
PAD, BOS, UNK = 0, 1, 2


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim ** -0.5
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        # layer scales (not 1, so that the stream's ls_1 / ls_2 matter)
        self.ls_1 = nn.Parameter(0.5 + torch.rand(width))
        self.ls_2 = nn.Parameter(0.5 + torch.rand(width))

    def qkv_heads(self, y):
        """(N, T, width) -> q, k, v each (N, heads, T, head_dim)."""
        n, t, _ = y.shape
        qkv = self.qkv(y).view(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attention(self, y):
        q, k, v = self.qkv_heads(y)
        a = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)
        u = (a @ v).transpose(1, 2).reshape(y.shape[0], y.shape[1], -1)   # heads concatenated
        return self.out_proj(u)

    def forward(self, x):
        x = x + self.ls_1 * self.attention(self.ln_1(x))
        return x + self.ls_2 * self.mlp(self.ln_2(x))


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        grid = IMAGE_SIZE // PATCH
        self.grid_size = (grid, grid)
        self.conv1 = nn.Conv2d(3, WIDTH, PATCH, stride=PATCH, bias=False)
        self.class_embedding = nn.Parameter(0.5 * torch.randn(WIDTH))
        self.positional_embedding = nn.Parameter(0.5 * torch.randn(1 + grid * grid, WIDTH))
        self.ln_pre = nn.LayerNorm(WIDTH)
        self.blocks = nn.ModuleList(Block(WIDTH, HEADS) for _ in range(LAYERS))
        self.ln_post = nn.LayerNorm(WIDTH)
        self.proj = nn.Parameter(WIDTH ** -0.5 * torch.randn(WIDTH, EMBED_DIM))

    def embed(self, pixels):
        x = self.conv1(pixels).flatten(2).transpose(1, 2)                   # (N, h*w, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def forward(self, pixels):
        x = self.embed(pixels)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x[:, 0]) @ self.proj


class BagOfWords(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, 32, mode="mean", padding_idx=PAD)
        self.mlp = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, EMBED_DIM))

    def forward(self, tokens):
        return self.mlp(self.bag(tokens))


class TinyCLIP(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual = TinyViT()
        self.text = BagOfWords(len(WORDS) + 3)


class Tokenizer:
    """Lower-cased words -> ids (0 pad, 1 start, 2 unknown, 3.. the word list), (N, 16)."""

    def __init__(self, words):
        self.ids = {w: i + 3 for i, w in enumerate(words)}

    def __call__(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), CONTEXT), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [BOS] + [self.ids.get(w, UNK) for w in re.findall(r"[a-z]+", str(text).lower())]
            ids = ids[:CONTEXT]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


class OutsideStream(ViTResidualStream):
    """The residual stream of TinyViT, on the module's own parameters (no copies)."""

    def __init__(self, vit: TinyViT):
        self.vit = vit
        self.num_layers = len(vit.blocks)
        self.num_heads = HEADS
        self.width = WIDTH
        self.head_dim = WIDTH // HEADS
        self.embed_dim = EMBED_DIM
        self.grid_size = vit.grid_size
        self.ln_post_weight = vit.ln_post.weight
        self.ln_post_bias = vit.ln_post.bias
        self.ln_post_eps = vit.ln_post.eps
        self.proj = vit.proj

    def embed(self, pixels):
        return self.vit.embed(pixels)

    def block(self, index):
        b = self.vit.blocks[index]
        return ViTBlockParts(
            ln_1=b.ln_1, qkv=b.qkv_heads, scale=b.scale,
            out_proj_weight=b.out_proj.weight, out_proj_bias=b.out_proj.bias,
            ln_2=b.ln_2, mlp=b.mlp,
            ls_1=lambda x, g=b.ls_1: x * g, ls_2=lambda x, g=b.ls_2: x * g,
            # the MLP's neurons (optional parts, for neuron methods): Linear, GELU | Linear
            mlp_hidden=b.mlp[:-1], mlp_out_weight=b.mlp[-1].weight, mlp_out_bias=b.mlp[-1].bias)


class OutsideCLIP(TorchBackbone):
    def _encode_image(self, pixels):
        return self.model.visual(pixels)

    def _encode_text(self, tokens):
        return self.model.text(tokens.to(self.device))

    def residual_stream(self):
        return OutsideStream(self.model.visual)


def build_clip(*, pretrained=None, device="auto", dtype=None, **options):
    if options:
        raise interpcore.InterpError(
            f"outside:clip takes no options; got {', '.join(sorted(options))}.")
    net = seeded(TinyCLIP, 0)
    load_weights(net, pretrained)
    return OutsideCLIP(
        "outside:clip", net, pretrained=pretrained, device=device, dtype=dtype,
        transform=transform, tokenizer=Tokenizer(WORDS), embed_dim=EMBED_DIM,
        capabilities=[Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER,
                      Capability.VIT_RESIDUAL_STREAM])
