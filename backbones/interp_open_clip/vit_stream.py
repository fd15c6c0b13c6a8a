"""Residual-stream access to open_clip's ``VisionTransformer`` (``model.visual``).

:class:`OpenClipViTStream` exposes the parts of the image tower that PRS needs (see
:class:`interpcore.base.ViTResidualStream`): the token embedding (patch convolution, class
token, positional embedding, ``ln_pre``), each block's layer norms, q/k/v projections,
attention output projection, MLP and layer scales, and the final ``ln_post`` + ``proj``.

Supported: class-token pooling (``pool_type='tok'``), both open_clip block types (the
default one with ``nn.MultiheadAttention`` and its packed ``in_proj``; the custom one with
open_clip's ``Attention`` class, including q/k layer norms and per-head scales, which are
folded into the parts). Not supported, with a clear error: attentional pooling, average
pooling, scaled-cosine attention, and the extra sub-layer norms (``scale_attn``,
``scale_attn_inner``), none of which keeps the class token's output a sum of per-head terms.

Imported only when a residual stream is asked for (it imports torch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interpcore.base import ViTBlockParts, ViTResidualStream
from interpcore.errors import InterpError


def _is_identity(module) -> bool:
    return module is None or isinstance(module, torch.nn.Identity)


class _MHAQKV:
    """q, k, v of shape (N, heads, T, head_dim) from nn.MultiheadAttention's packed in_proj."""

    def __init__(self, attn: torch.nn.MultiheadAttention, heads: int):
        self.attn, self.heads = attn, heads

    def __call__(self, y):
        a = self.attn
        n, t, _ = y.shape
        qkv = F.linear(y, a.in_proj_weight, a.in_proj_bias)
        q, k, v = qkv.chunk(3, dim=-1)
        return tuple(z.reshape(n, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))


class _AttentionQKV:
    """q, k, v from open_clip's own Attention class (q/k layer norms applied)."""

    def __init__(self, attn, heads: int):
        self.attn, self.heads = attn, heads

    def __call__(self, y):
        a = self.attn
        n, t, _ = y.shape
        q, k, v = F.linear(y, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        return a.ln_q(q), a.ln_k(k), v


def _mlp_neurons(mlp) -> dict:
    """``mlp_hidden`` / ``mlp_out_weight`` / ``mlp_out_bias`` of open_clip's MLP (a Sequential
    ending in the ``c_proj`` Linear: c_fc, activation, optional norm), or nothing."""
    last = list(mlp.named_children())[-1:] if isinstance(mlp, torch.nn.Sequential) else []
    if not last or last[0][0] != "c_proj" or not isinstance(last[0][1], torch.nn.Linear):
        return {}
    proj = last[0][1]
    bias = proj.bias if proj.bias is not None else torch.zeros(proj.out_features, device=proj.weight.device,
                                                                dtype=proj.weight.dtype)
    return {"mlp_hidden": mlp[:-1], "mlp_out_weight": proj.weight, "mlp_out_bias": bias}


class OpenClipViTStream(ViTResidualStream):
    """The residual stream of an open_clip ``VisionTransformer`` with class-token pooling.

    ``visual`` is ``model.visual`` of an open_clip CLIP model. The stream reads the module's
    parameters directly (no copies), so it follows the model's device and dtype.
    """

    def __init__(self, visual, name: str = "open_clip model"):
        self.visual = visual
        self.name = name
        needed = ("conv1", "class_embedding", "positional_embedding", "transformer", "ln_post")
        missing = [a for a in needed if not hasattr(visual, a)]
        if missing:
            raise InterpError(
                f"{name}: the image tower is not an open_clip VisionTransformer (it has no "
                f"{', '.join(missing)}), so it has no ViT residual stream"
            )
        if getattr(visual, "attn_pool", None) is not None:
            raise InterpError(
                f"{name}: its image tower pools tokens with attentional pooling; PRS needs "
                "class-token pooling"
            )
        pool = getattr(visual, "pool_type", "tok")
        if pool != "tok":
            raise InterpError(
                f"{name}: its image tower pools tokens with pool_type='{pool}'; PRS needs "
                "class-token pooling ('tok')"
            )
        ln_post = visual.ln_post
        if not isinstance(ln_post, torch.nn.LayerNorm):
            raise InterpError(
                f"{name}: its final norm is {type(ln_post).__name__}, not a LayerNorm; "
                "PRS folds a LayerNorm"
            )
        blocks = list(visual.transformer.resblocks)
        if not blocks:
            raise InterpError(f"{name}: its image tower has no transformer blocks")
        self._blocks = [self._parts(i, b) for i, b in enumerate(blocks)]
        first = blocks[0].attn
        self.num_layers = len(blocks)
        self.num_heads = first.num_heads
        self.width = visual.class_embedding.shape[-1]
        self.head_dim = self.width // self.num_heads
        self.grid_size = tuple(int(g) for g in visual.grid_size)
        self.ln_post_weight = ln_post.weight
        self.ln_post_bias = ln_post.bias
        self.ln_post_eps = float(ln_post.eps)
        self.proj = visual.proj
        self.embed_dim = self.width if self.proj is None else int(self.proj.shape[1])

    # -- construction ----------------------------------------------------------------------
    def _parts(self, index: int, block) -> ViTBlockParts:
        attn = block.attn
        where = f"{self.name}: block {index}"
        if isinstance(attn, torch.nn.MultiheadAttention):
            if attn.bias_k is not None or attn.add_zero_attn:
                raise InterpError(f"{where} uses bias_k/bias_v or zero attention, not supported")
            if not attn._qkv_same_embed_dim:
                raise InterpError(f"{where} has separate q/k/v projections of different sizes")
            heads = attn.num_heads
            qkv = _MHAQKV(attn, heads)
            out_w, out_b = attn.out_proj.weight, attn.out_proj.bias
        elif hasattr(attn, "in_proj_weight") and hasattr(attn, "out_proj"):
            heads = attn.num_heads
            if getattr(attn, "logit_scale", None) is not None:
                raise InterpError(f"{where} uses scaled-cosine attention, not supported by PRS")
            if not _is_identity(getattr(attn, "ln_inner", None)):
                raise InterpError(
                    f"{where} normalizes the attention output before out_proj "
                    "(scale_attn_inner); its heads are not additive, so PRS cannot split it"
                )
            qkv = _AttentionQKV(attn, heads)
            out_w, out_b = attn.out_proj.weight, attn.out_proj.bias
            head_scale = getattr(attn, "head_scale", None)
            if head_scale is not None:  # per-head output scale: fold into out_proj columns
                hd = out_w.shape[1] // heads
                out_w = out_w * head_scale.reshape(heads, 1).repeat_interleave(hd, 0).reshape(1, -1)
        else:
            raise InterpError(f"{where} has an attention module of type {type(attn).__name__}, "
                              "which PRS does not know")
        if not _is_identity(getattr(block, "ln_attn", None)):
            raise InterpError(
                f"{where} normalizes the attention output (scale_attn); PRS cannot split it"
            )
        if out_b is None:
            out_b = torch.zeros(out_w.shape[0], device=out_w.device, dtype=out_w.dtype)
        scale = float(attn.head_dim ** -0.5) if hasattr(attn, "head_dim") else float(
            (out_w.shape[1] // heads) ** -0.5
        )
        return ViTBlockParts(
            ln_1=block.ln_1,
            qkv=qkv,
            scale=scale,
            out_proj_weight=out_w,
            out_proj_bias=out_b,
            ln_2=block.ln_2,
            mlp=block.mlp,
            ls_1=block.ls_1,
            ls_2=block.ls_2,
            **_mlp_neurons(block.mlp),
        )

    # -- the contract -------------------------------------------------------------------
    def embed(self, pixels):
        v = self.visual
        x = v.conv1(pixels.to(v.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        if x.shape[1] != v.positional_embedding.shape[0]:
            raise InterpError(
                f"{self.name}: images give {x.shape[1] - 1} patches but the model has positional "
                f"embeddings for {v.positional_embedding.shape[0] - 1}; resize images to "
                f"{tuple(getattr(v, 'image_size', ('?', '?')))}"
            )
        x = x + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)  # patch dropout is off at inference and skipped here

    def block(self, index: int) -> ViTBlockParts:
        return self._blocks[index]
