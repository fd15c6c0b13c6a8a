"""A tiny CLIP-like model written from scratch, with the ViT residual stream PRS needs.

The image tower is a pre-LayerNorm ViT with class-token pooling; the text tower averages word
embeddings (words are hashed into buckets, so any text works). The weights are random with a
fixed seed: the model means nothing, but every interpcore method that needs a CLIP ViT runs
on it, which is what this example shows. Everything here uses only interpcore's public
contract (docs/plugins.md).
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from interpcore import Capability, ViTBlockParts, ViTResidualStream
from interpcore.torch_backbone import TorchBackbone

CONFIGS = {"tiny": dict(image=32, patch=8, width=32, layers=2, heads=4, embed=16, buckets=512)}


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def split_qkv(self, y):
        n, t, w = y.shape
        q, k, v = self.qkv(y).chunk(3, dim=-1)
        return tuple(z.reshape(n, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))

    def forward(self, x):
        q, k, v = self.split_qkv(self.ln_1(x))
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        x = x + self.out(a.transpose(1, 2).reshape(x.shape))
        return x + self.mlp(self.ln_2(x))


class TinyClip(nn.Module):
    def __init__(self, image, patch, width, layers, heads, embed, buckets):
        super().__init__()
        self.grid = image // patch
        self.patch = nn.Conv2d(3, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(width) * 0.1)
        self.pos = nn.Parameter(torch.randn(1 + self.grid**2, width) * 0.1)
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed) / width**0.5)
        self.words = nn.Embedding(buckets, embed)

    def embed(self, pixels):
        x = self.patch(pixels).flatten(2).transpose(1, 2)  # (N, grid*grid, width)
        cls = self.cls.expand(x.shape[0], 1, -1)
        return self.ln_pre(torch.cat([cls, x], dim=1) + self.pos)

    def encode_image(self, pixels):
        x = self.embed(pixels)
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x[:, 0]) @ self.proj

    def encode_text(self, tokens):  # (N, L) bucket ids, -1 = padding -> mean word embedding
        weights = (tokens >= 0).float()
        vectors = self.words.weight[tokens.clamp_min(0)] * weights[..., None]
        return vectors.sum(1) / weights.sum(1, keepdim=True).clamp_min(1)


class HashTokenizer:
    """Words -> bucket ids (stable across processes: SHA-1, not Python's hash)."""

    def __init__(self, buckets: int, length: int = 16):
        self.buckets, self.length = buckets, length

    def __call__(self, texts):
        rows = []
        for text in texts:
            ids = [int(hashlib.sha1(w.encode()).hexdigest(), 16) % self.buckets
                   for w in text.lower().split()][: self.length] or [0]
            rows.append(ids + [-1] * (self.length - len(ids)))
        return torch.tensor(rows)


class TinyClipStream(ViTResidualStream):
    """The residual stream of :class:`TinyClip` (reads the module's own tensors)."""

    def __init__(self, model: TinyClip):
        self.model = model
        first = model.blocks[0]
        self.num_layers = len(model.blocks)
        self.num_heads = first.heads
        self.width = model.cls.shape[0]
        self.head_dim = self.width // self.num_heads
        self.embed_dim = model.proj.shape[1]
        self.grid_size = (model.grid, model.grid)
        self.ln_post_weight = model.ln_post.weight
        self.ln_post_bias = model.ln_post.bias
        self.ln_post_eps = model.ln_post.eps
        self.proj = model.proj

    def embed(self, pixels):
        return self.model.embed(pixels)

    def block(self, index: int) -> ViTBlockParts:
        b = self.model.blocks[index]
        return ViTBlockParts(ln_1=b.ln_1, qkv=b.split_qkv, scale=self.head_dim**-0.5,
                             out_proj_weight=b.out.weight, out_proj_bias=b.out.bias,
                             ln_2=b.ln_2, mlp=b.mlp, mlp_hidden=b.mlp[:2],
                             mlp_out_weight=b.mlp[2].weight, mlp_out_bias=b.mlp[2].bias)


class TinyClipBackbone(TorchBackbone):
    def _encode_image(self, pixels):
        return self.model.encode_image(pixels)

    def _encode_text(self, tokens):
        return self.model.encode_text(tokens)

    def residual_stream(self):
        return TinyClipStream(self.model)

    def gradcam_reshape_transform(self):
        grid = self.model.grid

        def reshape(tokens):  # (N, 1 + grid*grid, C) -> (N, C, grid, grid), class token dropped
            return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, grid, grid)

        return reshape


def build(model: str, *, pretrained=None, device="auto", dtype=None) -> TinyClipBackbone:
    from torchvision.transforms import functional as TF

    cfg = CONFIGS[model]
    torch.manual_seed(0)  # random weights, the same in every process
    net = TinyClip(**cfg)
    if pretrained is not None:
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(pretrained)))
    size = cfg["image"]
    return TinyClipBackbone(
        f"toyvit:{model}", net, pretrained=pretrained, device=device, dtype=dtype,
        transform=lambda im: TF.normalize(TF.to_tensor(im.resize((size, size))), [0.5] * 3, [0.5] * 3),
        tokenizer=HashTokenizer(cfg["buckets"]), embed_dim=cfg["embed"],
        capabilities=[Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER,
                      Capability.VIT_RESIDUAL_STREAM, Capability.FEATURE_MAPS],
        default_layer="ln_post", gradcam_layers=[f"blocks.{cfg['layers'] - 1}.ln_1"],
    )
