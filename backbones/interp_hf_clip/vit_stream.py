"""Residual-stream access to transformers' ``CLIPVisionTransformer``.

:class:`HFClipViTStream` exposes the parts PRS needs (see
:class:`interpcore.base.ViTResidualStream`): the embeddings (patch convolution, class token,
position embeddings) followed by ``pre_layrnorm``; each encoder layer's ``layer_norm1``,
separate ``q_proj`` / ``k_proj`` / ``v_proj``, ``out_proj``, ``layer_norm2`` and MLP; and
``post_layernorm`` on the pooled class token followed by the bias-free
``visual_projection``. transformers' CLIP has no layer scale, so ``ls_1`` / ``ls_2`` are the
identity. The MLP's neurons (``mlp_hidden``: ``activation_fn(fc1(y))``; ``fc2``'s weight and
bias) are exposed when the MLP is transformers' ``fc1`` / activation / ``fc2``.

Imported only when a residual stream is asked for (it imports torch).
"""

from __future__ import annotations

import torch

from interpcore.base import ViTBlockParts, ViTResidualStream
from interpcore.errors import InterpError


class _SeparateQKV:
    """q, k, v of shape (N, heads, T, head_dim) from three nn.Linear projections."""

    def __init__(self, attn, heads: int):
        self.attn, self.heads = attn, heads

    def __call__(self, y):
        a = self.attn
        n, t, _ = y.shape
        return tuple(
            proj(y).reshape(n, t, self.heads, -1).transpose(1, 2)
            for proj in (a.q_proj, a.k_proj, a.v_proj)
        )


def _mlp_neurons(mlp) -> dict:
    """``mlp_hidden`` / ``mlp_out_weight`` / ``mlp_out_bias`` of transformers' ``CLIPMLP``
    (``fc2(activation_fn(fc1(y)))``), or nothing for another MLP."""
    fc1, act, fc2 = (getattr(mlp, a, None) for a in ("fc1", "activation_fn", "fc2"))
    if not (isinstance(fc1, torch.nn.Linear) and isinstance(fc2, torch.nn.Linear) and callable(act)):
        return {}
    bias = fc2.bias if fc2.bias is not None else torch.zeros_like(fc2.weight[:, 0])
    return {"mlp_hidden": lambda y: act(fc1(y)), "mlp_out_weight": fc2.weight, "mlp_out_bias": bias}


class HFClipViTStream(ViTResidualStream):
    """The residual stream of a transformers CLIP image tower.

    ``vision_model``: a ``CLIPVisionTransformer`` (``CLIPModel.vision_model``) or a
    ``CLIPVisionModel`` / ``CLIPVisionModelWithProjection`` (its ``.vision_model`` is used).
    ``visual_projection``: the ``nn.Linear`` (no bias) from the pooled output to the joint
    embedding space (``CLIPModel.visual_projection``), or ``None`` for the tower's pooled
    output. The stream reads the modules' parameters directly.
    """

    def __init__(self, vision_model, visual_projection=None, name: str = "transformers CLIP"):
        self.name = name
        if visual_projection is None and hasattr(vision_model, "visual_projection"):
            visual_projection = vision_model.visual_projection
        if not hasattr(vision_model, "pre_layrnorm") and hasattr(vision_model, "vision_model"):
            vision_model = vision_model.vision_model
        needed = ("embeddings", "pre_layrnorm", "encoder", "post_layernorm")
        missing = [a for a in needed if not hasattr(vision_model, a)]
        if missing:
            raise InterpError(
                f"{name}: the image tower is not a transformers CLIPVisionTransformer (it has "
                f"no {', '.join(missing)}), so it has no ViT residual stream"
            )
        self.vision_model = vision_model
        layers = list(vision_model.encoder.layers)
        if not layers:
            raise InterpError(f"{name}: its image tower has no encoder layers")
        self._blocks = [self._parts(i, layer) for i, layer in enumerate(layers)]
        attn = layers[0].self_attn
        self.num_layers = len(layers)
        self.num_heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.width = self.num_heads * self.head_dim
        emb = vision_model.embeddings
        g = int(emb.image_size) // int(emb.patch_size)
        self.grid_size = (g, g)
        ln = vision_model.post_layernorm
        self.ln_post_weight = ln.weight
        self.ln_post_bias = ln.bias
        self.ln_post_eps = float(ln.eps)
        if visual_projection is not None:
            if getattr(visual_projection, "bias", None) is not None:
                raise InterpError(f"{name}: its visual projection has a bias; PRS expects none")
            self.proj = visual_projection.weight.T
            self.embed_dim = int(visual_projection.weight.shape[0])
        else:
            self.proj = None
            self.embed_dim = self.width

    def _parts(self, index: int, layer) -> ViTBlockParts:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
            raise InterpError(
                f"{self.name}: encoder layer {index} has no q/k/v/out projections PRS knows"
            )
        out_b = attn.out_proj.bias
        if out_b is None:
            out_b = torch.zeros_like(attn.out_proj.weight[:, 0])
        return ViTBlockParts(
            ln_1=layer.layer_norm1,
            qkv=_SeparateQKV(attn, int(attn.num_heads)),
            scale=float(attn.scale),
            out_proj_weight=attn.out_proj.weight,
            out_proj_bias=out_b,
            ln_2=layer.layer_norm2,
            mlp=layer.mlp,
            **_mlp_neurons(layer.mlp),
        )

    def embed(self, pixels):
        emb = self.vision_model.embeddings
        size = int(emb.image_size)
        if pixels.shape[-2:] != (size, size):
            raise InterpError(
                f"{self.name}: images are {tuple(pixels.shape[-2:])} but the model expects "
                f"{size}x{size}"
            )
        x = emb(pixels.to(emb.patch_embedding.weight.dtype))
        return self.vision_model.pre_layrnorm(x)

    def block(self, index: int) -> ViTBlockParts:
        return self._blocks[index]
