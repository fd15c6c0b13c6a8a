"""PRS: exact decomposition of a CLIP ViT image embedding into direct contributions.

For a pre-LayerNorm ViT with class-token pooling (see
:class:`interpcore.base.ViTResidualStream`), the final class-token residual is a sum::

    x_cls = e + sum_l (attn_l + mlp_l),   attn_l = sum_h head_{l,h} + bias_l
    head_{l,h} = sum_t a_{l,h}[cls, t] * ls_1(v_{l,h}[t] @ W_o[h]^T)

and the image embedding is ``z = (gamma * (x_cls - mean(x_cls)) / std + beta) @ proj``.
Mean subtraction is linear and ``std`` is one number per image, so with the *actual* std of
each image every component ``c`` contributes exactly ``(gamma * (c - mean(c)) / std) @ proj``
and ``beta @ proj`` is one more, constant, term. The contributions sum to ``z``; dividing by
``|z|`` gives the normalized version, which sums to ``z / |z|``.

Only the class token's row of each attention map is computed (``(N, heads, T)`` per layer)
and each head's values are projected straight into the ``D``-dimensional output space, so the
per-patch decomposition costs ``heads x T x D`` numbers per layer and image, never the
``T x T x heads x width`` tensor of a naive implementation.

:func:`decompose_dataset` streams a whole dataset into memory-mapped ``.npy`` files
(:class:`PRSStore`), written into a temporary folder that is renamed into place when
complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from interpcore import Capability, Decomposer, InterpError, Result
from interpcore.progress import progress

STORE_VERSION = 1
CONVENTIONS = ("centred", "reference")


# --------------------------------------------------------------------------------------
# Folding the final LayerNorm and projection into each layer's weights
# --------------------------------------------------------------------------------------


class _Folded:
    """Per-layer matrices that map head values straight to (un-std-scaled) output space.

    ``M = center(diag(gamma) @ proj)``: ``c @ M == (gamma * (c - mean(c))) @ proj``.
    ``G[l]`` (heads, head_dim, D): ``v_h @ G[l][h] == ls_1(v_h @ W_o[h]^T) @ M``.
    ``bias[l]`` (D,): ``ls_1(out_proj_bias) @ M``.
    """

    def __init__(self, stream, device):
        W = stream.width
        f32 = dict(device=device, dtype=torch.float32)
        gamma = stream.ln_post_weight
        gamma = torch.ones(W, **f32) if gamma is None else gamma.detach().to(**f32)
        proj = torch.eye(W, **f32) if stream.proj is None else stream.proj.detach().to(**f32)
        M = gamma[:, None] * proj
        self.M = M - M.mean(dim=0, keepdim=True)
        beta = stream.ln_post_bias
        self.ln_bias = (
            torch.zeros(proj.shape[1], **f32) if beta is None else beta.detach().to(**f32) @ proj
        )
        self.G, self.bias, self.ls2, self.Gm, self.bias_mean = [], [], [], [], []
        H, dh = stream.num_heads, stream.head_dim
        for i in range(stream.num_layers):
            b = stream.block(i)
            ls1 = _layer_scale_vector(b.ls_1, W, device, f"block {i} ls_1")
            Wo = b.out_proj_weight.detach().to(**f32)  # (W, H*dh)
            if Wo.shape != (W, H * dh):
                raise InterpError(
                    f"block {i}: out_proj weight has shape {tuple(Wo.shape)}, expected "
                    f"({W}, {H * dh})"
                )
            Wh = Wo.T.reshape(H, dh, W) * ls1  # (H, dh, W)
            self.G.append(Wh @ self.M)  # (H, dh, D)
            self.bias.append((b.out_proj_bias.detach().to(**f32) * ls1) @ self.M)
            # for the reference's split: each head's channel mean is v_h @ Gm[l][h]
            self.Gm.append(Wh.mean(dim=-1))  # (H, dh)
            self.bias_mean.append(float((b.out_proj_bias.detach().to(**f32) * ls1).mean()))
        self.gamma_proj = gamma @ proj  # (D,): what a unit shift of every channel adds


def _layer_scale_vector(fn, width, device, what):
    """The diagonal of a per-channel layer scale (checked to be linear and diagonal)."""
    with torch.no_grad():
        probe = next((p for p in getattr(fn, "parameters", lambda: [])()), None)
        dtype = probe.dtype if probe is not None else torch.float32
        ones = torch.ones(1, width, device=device, dtype=dtype)
        vec = fn(ones)[0].float()
        g = torch.Generator().manual_seed(0)
        r = torch.randn(1, width, generator=g).to(device=device, dtype=dtype)
        if not torch.allclose(fn(r)[0].float(), r[0].float() * vec, rtol=1e-3, atol=1e-5):
            raise InterpError(f"{what} is not a per-channel scale; PRS needs it to be linear")
    return vec


# --------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class PRSDecomposition(Result):
    """Direct contributions of every component to a batch of image embeddings.

    All tensors are float32 on the CPU; ``N`` images, ``L`` layers, ``H`` heads, ``T``
    tokens (index 0 is the class token, then patches row by row), ``D`` embedding size.

    * ``embedding`` (N, D): the image embedding as the model computes it.
    * ``embed`` (N, D): the input (class-token embedding) term.
    * ``attn`` (N, L, D): each attention layer's total (heads + its out_proj bias).
    * ``attn_bias`` (N, L, D): the out_proj bias part of ``attn``.
    * ``attn_cls`` (N, L, D): the class-token-to-itself part of ``attn`` (all heads).
    * ``mlps`` (N, L, D): each MLP's contribution.
    * ``heads`` (N, len(head_layers), H, D), or with ``per_patch`` (N, len(head_layers), H,
      T, D): per-head (and per source token) contributions for the layers ``head_layers``.
    * ``ln_bias`` (D,): the final LayerNorm bias term, the same for every image.
    * ``std`` (N,): the final LayerNorm's std of each image; ``norm`` (N,): ``|embedding|``.

    ``embed + attn.sum(1) + mlps.sum(1) + ln_bias == embedding``; for each recorded layer,
    ``heads.sum(heads [and tokens]) + attn_bias == attn``. With ``normalized=True`` every
    contribution has been divided by ``norm`` (and ``ln_bias`` is then (N, D)).
    """

    backbone: str
    embedding: torch.Tensor
    embed: torch.Tensor
    attn: torch.Tensor
    attn_bias: torch.Tensor
    attn_cls: torch.Tensor
    mlps: torch.Tensor
    heads: torch.Tensor | None
    head_layers: list
    ln_bias: torch.Tensor
    std: torch.Tensor
    norm: torch.Tensor
    per_patch: bool = False
    normalized: bool = False
    grid_size: tuple = ()
    convention: str = "centred"  #: "centred" or "reference" (see PRSDecomposer.decompose)

    # -- sums -------------------------------------------------------------------------
    def total(self):
        """The sum of all contributions, (N, D): equals ``embedding`` (or its unit vector)."""
        return self.embed + self.attn.sum(1) + self.mlps.sum(1) + self.ln_bias

    def head_total(self):
        """Heads summed over tokens (per-patch mode) and heads: (N, len(head_layers), D)."""
        h = self.heads.sum(3) if self.per_patch else self.heads
        return h.sum(2)

    def reference_arrays(self) -> dict:
        """The arrays the reference's ``compute_prs.py`` stores, for comparison with them:
        ``attentions`` (N, L, H, D) (patches summed), ``mlps`` (N, L + 1, D) (the input
        first), ``cls_attn`` (N, L, D) (class token to itself, heads summed; per-patch runs
        only). Needs ``convention="reference"``."""
        if self.convention != "reference":
            raise InterpError("reference_arrays() needs decompose(..., convention='reference')")
        heads = self.heads.sum(3) if self.per_patch else self.heads
        out = {"attentions": heads.numpy(),
               "mlps": torch.cat([self.embed[:, None], self.mlps], dim=1).numpy()}
        if self.per_patch:
            out["cls_attn"] = self.attn_cls.numpy()
        return out

    @property
    def verification(self):
        """The sum of the contributions against the embedding (max relative error over the
        images; float32 gives ~1e-7)."""
        from interpcore import Verification

        return Verification("max relative error of the sum of contributions", self.max_relative_error(), 1e-4)

    def max_relative_error(self) -> float:
        """max over images of |sum of contributions - embedding| / |embedding|."""
        target = self.embedding
        if self.normalized:
            target = target / self.norm[:, None]
        err = (self.total() - target).norm(dim=-1) / target.norm(dim=-1)
        return float(err.max())

    def normalize(self) -> PRSDecomposition:
        """A copy with every contribution divided by ``|embedding|`` (sums to the unit vector)."""
        if self.normalized:
            return self
        n = self.norm

        def div(t, extra):
            return t / n.reshape(-1, *([1] * extra))

        hd = self.heads.dim() - 1 if self.heads is not None else 0
        return dataclasses.replace(
            self,
            embed=div(self.embed, 1),
            attn=div(self.attn, 2),
            attn_bias=div(self.attn_bias, 2),
            attn_cls=div(self.attn_cls, 2),
            mlps=div(self.mlps, 2),
            heads=None if self.heads is None else div(self.heads, hd),
            ln_bias=self.ln_bias[None, :] / n[:, None],
            normalized=True,
        )

    def patch_map(self, direction, layers=None, heads=None):
        """Per-patch scores ``(N, gh, gw)``: contributions of the chosen layers / heads from each
        patch, projected on ``direction`` (D,) (e.g. a text embedding). Needs ``per_patch``."""
        if not self.per_patch:
            raise InterpError("patch maps need a per-patch decomposition (per_patch=True)")
        d = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
        h = self.heads  # (N, Lh, H, T, D)
        if layers is not None:
            idx = [self.head_layers.index(_layer_index(li, self.head_layers)) for li in layers]
            h = h[:, idx]
        if heads is not None:
            h = h[:, :, list(heads)]
        s = (h @ d).sum(dim=(1, 2))[:, 1:]  # drop the class token
        gh, gw = self.grid_size
        return s.reshape(s.shape[0], gh, gw)

    # -- printing -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A summary (tensor sizes, error, per-layer norms); the tensors stay on the object."""
        norms = lambda t: [round(float(v), 5) for v in t.norm(dim=-1).mean(0)]  # noqa: E731
        return {
            "backbone": self.backbone,
            "images": int(self.embedding.shape[0]),
            "layers": int(self.attn.shape[1]),
            "heads_shape": None if self.heads is None else list(self.heads.shape),
            "head_layers": list(self.head_layers),
            "per_patch": self.per_patch,
            "normalized": self.normalized,
            "max_relative_error": self.max_relative_error(),
            "mean_norm": {
                "embed": round(float(self.embed.norm(dim=-1).mean()), 5),
                "attn": norms(self.attn),
                "mlps": norms(self.mlps),
            },
        }

    def figure(self):
        """Mean norm of each layer's attention and MLP direct contribution (as printed)."""
        from interpcore import figures

        d = self.to_dict()["mean_norm"]
        return figures.line_plot(
            list(range(len(d["attn"]))), {"attention": d["attn"], "MLP": d["mlps"]},
            title=f"PRS: direct contributions of each layer, {self.backbone} "
                  f"({self.embedding.shape[0]} image(s))",
            xlabel="layer", ylabel="mean |direct contribution|")

    def __str__(self) -> str:
        d = self.to_dict()
        lines = [
            f"PRS decomposition of {d['images']} image(s) on {self.backbone}"
            f" ({'per patch' if self.per_patch else 'per head'}, layers {d['layers']})",
            f"  sum of contributions vs embedding: max relative error {d['max_relative_error']:.2e}",
            f"  mean |contribution|: input {d['mean_norm']['embed']}",
        ]
        for i, (a, m) in enumerate(zip(d["mean_norm"]["attn"], d["mean_norm"]["mlps"])):
            lines.append(f"    layer {i:2d}: attention {a:.4f}  mlp {m:.4f}")
        return "\n".join(lines)


def _layer_index(layer, recorded):
    return layer if layer >= 0 else layer + (max(recorded) + 1 if recorded else 0)


def resolve_layers(layers, num_layers: int) -> list[int]:
    """Layer indices from None (all), an int k (the last k layers) or a list (negatives ok)."""
    if layers is None:
        return list(range(num_layers))
    if isinstance(layers, int):
        if not 0 < layers <= num_layers:
            raise InterpError(f"asked for the last {layers} layers; the model has {num_layers}")
        return list(range(num_layers - layers, num_layers))
    out = []
    for li in layers:
        li = int(li)
        j = li + num_layers if li < 0 else li
        if not 0 <= j < num_layers:
            raise InterpError(f"layer {li} does not exist; the model has {num_layers} layers")
        if j not in out:
            out.append(j)
    return sorted(out)


# --------------------------------------------------------------------------------------
# The decomposer
# --------------------------------------------------------------------------------------


class PRSDecomposer(Decomposer):
    """Projected residual stream decomposition (Gandelsman et al.).

    Options: ``per_patch`` (bool, default False) records each head's contribution per source
    token; ``layers`` (None = all, int k = last k, or a list) chooses the layers whose heads
    are recorded (every layer is always part of the exact sum).
    """

    name = "prs"
    requires = (Capability.VIT_RESIDUAL_STREAM, Capability.IMAGE_ENCODER)

    def __init__(self, backbone, *, per_patch: bool = False, layers=None):
        super().__init__(backbone, per_patch=per_patch, layers=layers)
        self.stream = backbone.residual_stream()
        self.per_patch = bool(per_patch)
        self.layers = resolve_layers(layers, self.stream.num_layers)
        self.device = getattr(backbone, "device", None) or self.stream.ln_post_weight.device
        self._folded = None

    @property
    def folded(self) -> _Folded:
        if self._folded is None:
            self._folded = _Folded(self.stream, self.device)
        return self._folded

    def _pixels(self, images):
        if hasattr(self.backbone, "to_pixels"):
            return self.backbone.to_pixels(images)
        if isinstance(images, torch.Tensor):
            return images if images.dim() == 4 else images[None]
        return torch.stack([self.backbone.preprocess(im) for im in images])

    @torch.no_grad()
    def decompose(self, images, *, per_patch: bool | None = None, layers=None,
                  normalize: bool = False, batch_size: int = 32,
                  convention: str = "centred") -> PRSDecomposition:
        """Decompose images (tensor batch, PIL images or paths) into direct contributions.

        ``convention``: ``"centred"`` (default) centres each term by its own channel mean and
        keeps the final LayerNorm's bias and each layer's out-projection bias as terms of
        their own; ``"reference"`` splits the LayerNorm's mean and bias, and each layer's
        out-projection bias, evenly over the terms as the PRS authors' code does, and divides
        by ``|embedding|`` as their stored values are (docs/prs.md, "Two conventions").
        """
        if convention not in CONVENTIONS:
            raise InterpError(f"unknown PRS convention '{convention}'; use one of "
                              f"{', '.join(CONVENTIONS)}")
        if convention == "reference":
            if layers is not None and resolve_layers(layers, self.stream.num_layers) != list(range(self.stream.num_layers)):
                raise InterpError("the reference convention splits over every layer's heads: "
                                  "leave layers unset")
            return self._decompose_reference(images, per_patch=bool(per_patch or False),
                                             batch_size=batch_size)
        per_patch = self.per_patch if per_patch is None else bool(per_patch)
        layers = self.layers if layers is None else resolve_layers(layers, self.stream.num_layers)
        if not isinstance(images, (torch.Tensor, list, tuple)):
            images = [images]
        elif isinstance(images, torch.Tensor) and images.dim() == 3:
            images = images[None]  # one (C, H, W) image
        if len(images) == 0:
            raise InterpError("no images to decompose")
        parts = [
            self._decompose_pixels(self._pixels(images[s : s + batch_size]), per_patch, layers)
            for s in range(0, len(images), batch_size)
        ]
        def cat(k):  # one batch: no copy (per-patch heads can be large)
            return parts[0][k] if len(parts) == 1 else torch.cat([p[k] for p in parts])

        res = PRSDecomposition(
            backbone=self.backbone.name,
            embedding=cat("embedding"), embed=cat("embed"), attn=cat("attn"),
            attn_bias=cat("attn_bias"), attn_cls=cat("attn_cls"), mlps=cat("mlps"),
            heads=cat("heads") if layers else None, head_layers=list(layers),
            ln_bias=self.folded.ln_bias.cpu(), std=cat("std"), norm=cat("norm"),
            per_patch=per_patch, grid_size=tuple(self.stream.grid_size),
        )
        return res.normalize() if normalize else res

    def _decompose_pixels(self, pixels, per_patch: bool, layers, means: bool = False) -> dict:
        """The core: one forward pass, class-token rows only, folded projections. ``means``:
        also record every term's channel mean before the final LayerNorm (the reference's
        split needs them)."""
        s, fo = self.stream, self.folded
        x = s.embed(pixels)
        N, T, W = x.shape
        L, H = s.num_layers, s.num_heads
        M = fo.M
        embed = x[:, 0].float() @ M
        mean = {}
        if means:
            mean["embed"] = x[:, 0].float().mean(-1)
            mean["mlps"] = torch.empty(N, L, device=M.device)
            mean["heads"] = torch.empty((N, L, H, T) if per_patch else (N, L, H), device=M.device)
        attn = torch.empty(N, L, M.shape[1], device=M.device)
        attn_bias = torch.empty_like(attn)
        attn_cls = torch.empty_like(attn)
        mlps = torch.empty_like(attn)
        rec = {li: j for j, li in enumerate(layers)}
        heads = None
        if layers:
            shape = (N, len(layers), H, T, M.shape[1]) if per_patch else (N, len(layers), H, M.shape[1])
            heads = torch.empty(shape, device=M.device)
        for i in range(L):
            b = s.block(i)
            q, k, v = b.qkv(b.ln_1(x))
            o = F.scaled_dot_product_attention(q, k, v, scale=b.scale)
            o = o.transpose(1, 2).reshape(N, T, -1) @ b.out_proj_weight.T + b.out_proj_bias
            # the class token's row of every head's attention map: (N, H, T)
            a = ((q[:, :, :1].float() @ k.float().transpose(-1, -2)) * b.scale).softmax(-1)[:, :, 0]
            vf = v.float()
            G = fo.G[i]
            if means:
                Gm = fo.Gm[i]  # (H, dh)
                if per_patch:
                    mean["heads"][:, i] = torch.einsum("nhtd,hd->nht", vf, Gm) * a
                else:
                    mean["heads"][:, i] = torch.einsum("nhd,hd->nh", torch.einsum("nht,nhtd->nhd", a, vf), Gm)
            if per_patch and i in rec:
                vg = torch.einsum("nhtd,hde->nhte", vf, G)  # (N, H, T, D)
                pp = vg.mul_(a[..., None])
                heads[:, rec[i]] = pp
                per_head = pp.sum(2)
                cls_self = pp[:, :, 0].sum(1)
            else:
                per_head = torch.einsum("nhd,hde->nhe", torch.einsum("nht,nhtd->nhd", a, vf), G)
                cls_self = torch.einsum("nh,nhd,hde->ne", a[:, :, 0], vf[:, :, 0], G)
                if i in rec:
                    heads[:, rec[i]] = per_head
            attn[:, i] = per_head.sum(1) + fo.bias[i]
            attn_bias[:, i] = fo.bias[i]
            attn_cls[:, i] = cls_self
            x = x + b.ls_1(o)
            m = b.ls_2(b.mlp(b.ln_2(x)))
            mlps[:, i] = m[:, 0].float() @ M
            if means:
                mean["mlps"][:, i] = m[:, 0].float().mean(-1)
            x = x + m
        xc = x[:, 0].float()
        std = torch.sqrt(xc.var(dim=-1, unbiased=False) + s.ln_post_eps)
        embedding = s.post(x[:, 0]).float()
        inv = 1.0 / std
        out = {
            "embedding": embedding,
            "embed": embed * inv[:, None],
            "attn": attn * inv[:, None, None],
            "attn_bias": attn_bias * inv[:, None, None],
            "attn_cls": attn_cls * inv[:, None, None],
            "mlps": mlps * inv[:, None, None],
            "std": std,
            "norm": embedding.norm(dim=-1),
        }
        if heads is not None:
            out["heads"] = heads.mul_(inv.reshape(-1, *([1] * (heads.dim() - 1))))
        if means:
            out.update({f"mean_{k}": v for k, v in mean.items()})
            out["mean_total"] = xc.mean(-1)
        return {k: v.cpu() for k, v in out.items()}

    def _decompose_reference(self, images, *, per_patch: bool, batch_size: int) -> PRSDecomposition:
        """The reference's split (see :meth:`decompose`), from the centred terms and the
        terms' channel means: a term ``t`` of ``k`` equal shares contributes
        ``(gamma * (t - mean(x) / k) / std + beta / k) @ proj``, where the centred version is
        ``(gamma * (t - mean(t)) / std) @ proj``; the difference is
        ``(mean(t) - mean(x) / k) / std * (gamma @ proj) + (beta @ proj) / k``."""
        if not isinstance(images, (torch.Tensor, list, tuple)):
            images = [images]
        elif isinstance(images, torch.Tensor) and images.dim() == 3:
            images = images[None]
        if len(images) == 0:
            raise InterpError("no images to decompose")
        L, H = self.stream.num_layers, self.stream.num_heads
        layers = list(range(L))
        parts = [self._decompose_pixels(self._pixels(images[b : b + batch_size]), per_patch,
                                        layers, means=True)
                 for b in range(0, len(images), batch_size)]
        d = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        fo = self.folded
        gp, beta = fo.gamma_proj.cpu(), fo.ln_bias.cpu()
        std, mu = d["std"], d["mean_total"]
        K = 2 * L + 1  # the input and L MLPs, plus L attention layers (split over heads)

        def share(t, t_mean, k, shape):
            """t: centred contribution; t_mean: its channel mean; k: number of shares."""
            shift = (t_mean - mu.reshape(shape) / k) / std.reshape(shape)
            return t + shift[..., None] * gp + beta / k

        n1 = (-1, 1)
        embed = share(d["embed"], d["mean_embed"], K, (-1,))
        mlps = share(d["mlps"], d["mean_mlps"], K, n1)
        bias_mean = torch.tensor(fo.bias_mean)  # (L,)
        if per_patch:
            T = d["heads"].shape[3]
            k = K * H * T
            c = d["heads"] + (d["attn_bias"] / (H * T))[:, :, None, None, :]
            m = d["mean_heads"] + (bias_mean / (H * T))[None, :, None, None]
            heads = share(c, m, k, (-1, 1, 1, 1))
            attn = heads.sum(dim=(2, 3))
            cls_self = heads[:, :, :, 0].sum(2)
        else:
            k = K * H
            c = d["heads"] + (d["attn_bias"] / H)[:, :, None, :]
            m = d["mean_heads"] + (bias_mean / H)[None, :, None]
            heads = share(c, m, k, (-1, 1, 1))
            attn = heads.sum(2)
            cls_self = None
        res = PRSDecomposition(
            backbone=self.backbone.name, embedding=d["embedding"], embed=embed, attn=attn,
            attn_bias=torch.zeros_like(attn), attn_cls=d["attn_cls"] if cls_self is None else cls_self,
            mlps=mlps, heads=heads, head_layers=layers, ln_bias=torch.zeros_like(beta),
            std=std, norm=d["norm"], per_patch=per_patch, grid_size=tuple(self.stream.grid_size),
            convention="reference",
        )
        return res.normalize()

    # -- whole datasets -----------------------------------------------------------------
    def decompose_dataset(self, dataset, out=None, **kwargs) -> PRSStore:
        """Stream a dataset's decomposition to memory-mapped files; see :func:`decompose_dataset`."""
        return decompose_dataset(self, dataset, out=out, **kwargs)

    def segment_dataset(self, dataset, weights, **kwargs):
        """Zero-shot segmentation of every image with a ``mask`` in ``dataset`` from per-patch
        head contributions; ``weights`` (K, D) are class text embeddings (a zero-shot
        classifier, e.g. :func:`interpcore.zeroshot.classifier_weights`). Options (``limit``,
        ``batch_size``, ``layers``, ``threshold``, ``out_dir``, ``n_figures``) and the
        :class:`~interp_prs.spatial.SegmentationResult` (``miou``, ...) as in
        :func:`interp_prs.spatial.segment_dataset`."""
        from .spatial import segment_dataset

        return segment_dataset(self, dataset, weights, **kwargs)

    def spurious_study(self, store, heads, **kwargs):
        """Worst-group / average accuracy on a group dataset's store (e.g. Waterbirds) before
        and after mean-ablating ``heads`` ((layer, head) pairs); ``weights`` (K, D) a zero-shot
        classifier, or ``train_store`` for a linear probe. Returns a
        :class:`~interp_prs.spurious.SpuriousResult` (``before`` / ``after`` dicts with
        ``"worst"``); see :func:`interp_prs.spurious.spurious_study`."""
        from .spurious import spurious_study

        kwargs.setdefault("backbone", self.backbone.name)
        return spurious_study(store, heads, **kwargs)


# --------------------------------------------------------------------------------------
# Streaming whole datasets to disk
# --------------------------------------------------------------------------------------

#: arrays of a store and their shapes (n = images)
_ARRAYS = ("embedding", "norm", "embed", "attn", "attn_cls", "mlps", "heads", "ln_bias")


class PRSStore:
    """A dataset's PRS decomposition on disk: memory-mapped ``.npy`` arrays + ``meta.json``.

    Contributions are stored **normalized** (divided by each image's ``|embedding|``), as
    the experiments of the paper use them; ``norm`` gives the factor back. ``samples.jsonl``
    holds each image's label, group, attributes and caption where the dataset has them.
    """

    def __init__(self, path):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.exists():
            raise InterpError(f"{self.path} is not a PRS store (no meta.json)")
        try:
            self.meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise InterpError(f"{meta_file} is corrupt ({exc}); delete the folder and rerun") from None
        if self.meta.get("version") != STORE_VERSION:
            raise InterpError(f"{self.path} was written by another PRS store version; rerun")
        self._samples = None

    def __len__(self) -> int:
        return int(self.meta["n"])

    @property
    def head_layers(self) -> list[int]:
        return list(self.meta["head_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.meta["num_heads"])

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    def array(self, name: str, mmap: bool = True):
        if name not in _ARRAYS:
            raise InterpError(f"a PRS store has no array '{name}'; it has {', '.join(_ARRAYS)}")
        f = self.path / f"{name}.npy"
        if not f.exists():
            raise InterpError(f"{f} is missing; the store is incomplete, rerun the decomposition")
        try:
            return np.load(f, mmap_mode="r" if mmap else None)
        except ValueError as exc:
            raise InterpError(f"{f} is corrupt ({exc}); delete the store and rerun") from None

    def __getattr__(self, name):
        if name in _ARRAYS:
            return self.array(name)
        raise AttributeError(name)

    @property
    def samples(self) -> list[dict]:
        if self._samples is None:
            f = self.path / "samples.jsonl"
            self._samples = [json.loads(line) for line in f.read_text().splitlines() if line]
        return self._samples

    def field(self, key: str, default=None) -> list:
        return [s.get(key, default) for s in self.samples]

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.get("label", -1) for s in self.samples], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return np.array([s.get("group", -1) for s in self.samples], dtype=np.int64)

    def representation(self, heads=(), means=None) -> np.ndarray:
        """The stored images' normalized representations (N, D): the sum of every
        contribution, with ``heads`` ((layer, head) pairs) mean-ablated (replaced by their
        mean over the store, or by ``means``); with no heads, the normalized embeddings."""
        from .spurious import representation

        return representation(self, heads, means=means)

    def agreement_at_k(self, heads, attribute: str, k: int = 8, queries=None) -> float:
        """Image search in the space of ``heads``: the mean fraction of each query's ``k``
        nearest stored images (cosine, centred) that share its ``sample["attributes"]
        [attribute]``; ``queries``: image indices (default all)."""
        from .search import agreement_at_k

        return agreement_at_k(self, heads, attribute, k=k, queries=queries)

    def head_index(self, layer: int) -> int:
        layer = layer + self.num_layers if layer < 0 else layer
        if layer not in self.head_layers:
            raise InterpError(f"layer {layer}'s heads were not recorded; the store has "
                              f"layers {self.head_layers}")
        return self.head_layers.index(layer)

    def __repr__(self):
        return f"<PRSStore {self.path} n={len(self)} backbone={self.meta.get('backbone')}>"


def _sample_record(sample: dict, index: int) -> dict:
    rec = {"index": int(sample.get("index", index))}
    for k in ("label", "group", "caption", "attributes", "path"):
        if k in sample and sample[k] is not None:
            v = sample[k]
            rec[k] = int(v) if k in ("label", "group") else v
    return json.loads(json.dumps(rec, default=str))


def store_key(decomposer: PRSDecomposer, dataset, per_patch: bool, layers, limit) -> str:
    from interpcore.cache import key_hash

    return key_hash(
        "prs-store", STORE_VERSION, decomposer.backbone.cache_key, getattr(dataset, "name", "?"),
        repr(dataset), len(dataset), per_patch, layers, limit,
    )


def decompose_dataset(decomposer: PRSDecomposer, dataset, out=None, *, batch_size: int = 64,
                      per_patch: bool | None = None, layers=None, limit: int | None = None,
                      dtype: str = "float32", overwrite: bool = False, desc: str = "PRS") -> PRSStore:
    """Decompose every image of ``dataset`` into a :class:`PRSStore` at ``out``.

    ``out=None`` uses the user cache (keyed by backbone, dataset and options), so a second
    call with the same arguments returns the stored result at once. Arrays are written
    batch by batch into memory-mapped files, so RAM holds one batch at a time. ``dtype``
    ``float16`` halves the disk size (per-patch stores are large:
    ``n x layers x heads x tokens x D``). The folder appears only when complete.
    """
    per_patch = decomposer.per_patch if per_patch is None else bool(per_patch)
    layers = decomposer.layers if layers is None else resolve_layers(layers, decomposer.stream.num_layers)
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n <= 0:
        raise InterpError("the dataset has no images to decompose")
    if dtype not in ("float32", "float16"):
        raise InterpError(f"store dtype must be float32 or float16, got {dtype}")
    if out is None:
        from interpcore.cache import cache_dir

        out = cache_dir("prs") / store_key(decomposer, dataset, per_patch, layers, limit)
    out = Path(out)
    if out.exists():
        if (out / "meta.json").exists() and not overwrite:
            store = PRSStore(out)
            want = dict(n=n, per_patch=per_patch, head_layers=layers, backbone=decomposer.backbone.name,
                        dataset=repr(dataset))
            if all(store.meta.get(k) == v for k, v in want.items()):
                return store
            raise InterpError(f"{out} holds another decomposition; pass overwrite=True or another folder")
        if any(out.iterdir()) and not overwrite and not (out / "meta.json").exists():
            raise InterpError(f"{out} exists and is not a PRS store; choose an empty folder")
    s = decomposer.stream
    L, H, D = s.num_layers, s.num_heads, s.embed_dim
    T = 1 + s.grid_size[0] * s.grid_size[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        open_mm = np.lib.format.open_memmap
        hshape = (n, len(layers), H, T, D) if per_patch else (n, len(layers), H, D)
        arrs = {
            "embedding": open_mm(tmp / "embedding.npy", "w+", np.float32, (n, D)),
            "norm": open_mm(tmp / "norm.npy", "w+", np.float32, (n,)),
            "embed": open_mm(tmp / "embed.npy", "w+", np.float32, (n, D)),
            "attn": open_mm(tmp / "attn.npy", "w+", np.float32, (n, L, D)),
            "attn_cls": open_mm(tmp / "attn_cls.npy", "w+", np.float32, (n, L, D)),
            "mlps": open_mm(tmp / "mlps.npy", "w+", np.float32, (n, L, D)),
            "ln_bias": open_mm(tmp / "ln_bias.npy", "w+", np.float32, (n, D)),
            "heads": open_mm(tmp / "heads.npy", "w+", np.dtype(dtype), hshape),
        }
        records = []
        bar = progress(total=n, desc=desc, unit="img")
        try:
            for start in range(0, n, batch_size):
                idx = range(start, min(n, start + batch_size))
                samples = [dataset[i] for i in idx]
                images = [smp["image"] for smp in samples]
                with torch.no_grad():
                    r = decomposer.decompose(images, per_patch=per_patch, layers=layers,
                                             normalize=True, batch_size=batch_size)
                sl = slice(start, start + len(samples))
                arrs["embedding"][sl] = r.embedding.numpy()
                arrs["norm"][sl] = r.norm.numpy()
                arrs["embed"][sl] = r.embed.numpy()
                arrs["attn"][sl] = r.attn.numpy()
                arrs["attn_cls"][sl] = r.attn_cls.numpy()
                arrs["mlps"][sl] = r.mlps.numpy()
                arrs["ln_bias"][sl] = r.ln_bias.numpy()
                if r.heads is not None:
                    arrs["heads"][sl] = r.heads.numpy().astype(dtype, copy=False)
                records.extend(_sample_record(smp, i) for smp, i in zip(samples, idx))
                bar.update(len(samples))
        finally:
            bar.close()
        for a in arrs.values():
            a.flush()
        del arrs
        with open(tmp / "samples.jsonl", "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
        meta = {
            "version": STORE_VERSION, "backbone": decomposer.backbone.name,
            "pretrained": decomposer.backbone.pretrained, "dataset": repr(dataset),
            "dataset_name": getattr(dataset, "name", "?"), "split": getattr(dataset, "split", None),
            "classes": list(getattr(dataset, "classes", None) or []),
            "group_names": list(getattr(dataset, "group_names", None) or []),
            "n": n, "num_layers": L, "num_heads": H, "tokens": T, "embed_dim": D,
            "grid_size": list(s.grid_size), "per_patch": per_patch, "head_layers": layers,
            "dtype": dtype, "normalized": True,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        from interpcore.cache import apply_umask

        apply_umask(tmp, directory=True)  # mkdtemp makes 0700
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PRSStore(out)
