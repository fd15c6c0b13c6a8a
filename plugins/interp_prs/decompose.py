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

:func:`decompose_dataset` runs a whole dataset as a sharded, resumable
:mod:`interpcore.engine` job; :class:`PRSStore` reads the job folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from interpcore import Capability, Decomposer, InterpError, Result

STORE_VERSION = 2
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

    def segment_maps(self, images, *, weights, layers=None, batch_size: int = 32) -> dict:
        """Per-image zero-shot segmentation maps (the job verb of :meth:`segment_dataset`):
        each PIL image resized to the model's input size (no crop), decomposed per patch,
        ``class_map`` (N, gh, gw) the predicted class's patch scores minus their mean over the
        classes of ``weights`` (K, D), and ``pred`` (N,) that class."""
        from .spatial import class_map, input_size, patch_maps

        W = torch.as_tensor(weights, dtype=torch.float32)
        size = input_size(self.backbone)
        imgs = [im.convert("RGB").resize((size[1], size[0])) for im in images]
        with torch.no_grad():
            r = self.decompose(imgs, per_patch=True, layers=layers, batch_size=batch_size)
        maps = patch_maps(r, W)  # (b, K, gh, gw)
        pred = (r.embedding @ W.T).argmax(-1)
        return {"class_map": class_map(maps, pred), "pred": pred}

    # -- whole datasets -----------------------------------------------------------------
    def decompose_dataset(self, dataset, out=None, **kwargs) -> PRSStore:
        """The dataset's decomposition as a resumable job folder (a :class:`PRSStore`); see
        :func:`decompose_dataset`."""
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
# Whole datasets: job folders (interpcore.engine) read as a PRSStore
# --------------------------------------------------------------------------------------

#: arrays of a store; contributions are divided by |embedding| (see PRSStore)
_ARRAYS = ("embedding", "norm", "embed", "attn", "attn_cls", "mlps", "heads", "ln_bias")
#: the per-image fields a store keeps from the dataset's samples (Parquet columns)
SAMPLE_FIELDS = ("label", "group", "caption", "attributes", "path")
META_FILE = "prs.json"


def job_arrays(result: PRSDecomposition, n: int, heads_dtype: str = "float32") -> dict:
    """The job adapter: a normalized batch decomposition -> the store's per-image arrays
    (``heads`` is ``(n, 0, H, D)`` when no layer's heads were asked for)."""
    heads = result.heads
    if heads is None:  # no layer's heads recorded
        heads = torch.zeros(n, 0, 0, result.embed.shape[1])
    out = {k: getattr(result, k).float().numpy() for k in _ARRAYS if k != "heads"}
    out["heads"] = heads.numpy().astype(heads_dtype, copy=False)
    return out


def job_arrays_float16(result: PRSDecomposition, n: int) -> dict:
    """:func:`job_arrays` with ``heads`` stored as float16 (half the disk)."""
    return job_arrays(result, n, "float16")


def job_spec(*, dataset: str, backbone: str, split: str = "test", dataset_options=None,
             backbone_options=None, per_patch: bool = False, layers=None, batch_size: int = 64,
             shard_size: int = 256, limit: int | None = None, dtype: str = "float32",
             verb: str | None = None, call_options=None):
    """The :class:`~interpcore.engine.JobSpec` of a PRS store: every PRS and TextSpan dataset
    command (and :func:`decompose_dataset`) runs this job, so one finished job folder serves
    them all. ``layers``: None (all), k (last k) or a list, as for :class:`PRSDecomposer`.
    ``verb`` / ``call_options``: another method of the decomposer run on each batch of PIL
    images instead (e.g. ``segment_maps``), its per-image outputs stored as they are."""
    from interpcore.engine import JobSpec

    if dtype not in ("float32", "float16"):
        raise InterpError(f"store dtype must be float32 or float16, got {dtype}")
    adapter = "interp_prs.decompose:" + ("job_arrays" if dtype == "float32" else "job_arrays_float16")
    if verb is None:
        call_options = {"per_patch": bool(per_patch), "layers": layers, "normalize": True}
    return JobSpec(
        dataset=dataset, split=split or "test", dataset_options=dict(dataset_options or {}),
        backbone=backbone, backbone_options=dict(backbone_options or {}), method="prs",
        verb=verb, inputs="images", adapter=None if verb else adapter,
        fields=() if verb else SAMPLE_FIELDS,
        call_options={**dict(call_options or {}), "batch_size": int(batch_size)},
        batch_size=int(batch_size), shard_size=int(shard_size),
        limit=None if limit is None else int(limit),
    )


def object_names(decomposer: PRSDecomposer, dataset, limit=None) -> dict:
    """The dataset and backbone fields of a job run in this process on ``decomposer``'s
    backbone object and a Dataset object (see :func:`_dataset_fields`); the backbone is named
    with its name, weights and a fingerprint of its parameters (:func:`_weights_id`)."""
    bb = decomposer.backbone
    return {**_dataset_fields(dataset, limit),
            "backbone": bb.name if ":" in bb.name else f"object:{bb.name}",
            "backbone_options": {"pretrained": str(bb.pretrained), "weights": _weights_id(bb)}}


def _weights_id(backbone) -> str:
    """A fingerprint of the backbone's weights (every parameter's shape and up to 1,024 of
    its values, evenly spaced): two objects with the same name but other weights (random
    test models, fine-tuned copies) must not share a job."""
    import hashlib

    h = hashlib.sha256(str(getattr(backbone, "cache_key", backbone.name)).encode())
    model = getattr(backbone, "model", None)
    params = model.named_parameters() if hasattr(model, "named_parameters") else ()
    with torch.no_grad():
        for name, p in params:
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 1024)
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _dataset_fields(dataset, limit) -> dict:
    """How a job names ``dataset``: its registered name, split and options where the registry
    made it (``dataset.job_source``), else the object itself, bound in this process under a
    name made from its class and a fingerprint of its length and first, middle and last
    samples (so the same data gives the same job; only this process's local engine reads it)."""
    import hashlib

    from interpcore.engine import bind_dataset, dataset_source

    source = None if isinstance(dataset, str) else dataset_source(dataset)
    if source is not None:
        return source
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    h = hashlib.sha256(f"{type(dataset).__module__}.{type(dataset).__qualname__}|{len(dataset)}|"
                       f"{getattr(dataset, 'name', '?')}|{getattr(dataset, 'cache_key', '')}".encode())
    for i in sorted({0, n // 2, n - 1} if n > 0 else set()):
        sample = dataset[i]
        for k in sorted(sample):
            v = sample[k]
            if hasattr(v, "convert"):
                v = np.asarray(v.convert("RGB"))
            h.update(k.encode())
            h.update(v.tobytes() if isinstance(v, np.ndarray) else json.dumps(v, default=str).encode())
    name = f"object:{type(dataset).__qualname__}:{h.hexdigest()[:16]}"
    return {"dataset": bind_dataset(name, dataset), "split": getattr(dataset, "split", None) or "test"}


def decompose_dataset(decomposer: PRSDecomposer, dataset, out=None, *, batch_size: int = 64,
                      per_patch: bool | None = None, layers=None, limit: int | None = None,
                      dtype: str = "float32", overwrite: bool = False, desc: str = "PRS",
                      shard_size: int = 256, progress: bool = True) -> PRSStore:
    """Decompose every image of ``dataset`` (a Dataset or a registered name) into a
    :class:`PRSStore`: a sharded, resumable :mod:`interpcore.engine` job run in this process
    with ``decomposer`` and its backbone, written to the job folder ``out`` (a folder or an
    fsspec URL; ``None``: the user cache, keyed by the job's spec).

    A second call with the same arguments computes no shard and reads the finished folder; an
    interrupted one computes only the shards that are missing. ``dtype`` ``float16`` halves
    the disk size of ``heads`` (per-patch stores are large: ``n x layers x heads x tokens x
    D``). A dataset the registry made is named in the job by name, split and options; any
    other Dataset object by its class and a fingerprint of its data (see ``docs/prs.md``).
    ``desc`` is accepted for older callers; the progress bar names the job.
    """
    import interpcore

    per_patch = decomposer.per_patch if per_patch is None else bool(per_patch)
    layers = decomposer.layers if layers is None else resolve_layers(layers, decomposer.stream.num_layers)
    if isinstance(dataset, str):
        dataset = interpcore.get_dataset(dataset)
    if len(dataset) == 0 or (limit is not None and int(limit) <= 0):
        raise InterpError("the dataset has no images to decompose")
    spec = job_spec(**object_names(decomposer, dataset, limit), per_patch=per_patch,
                    layers=layers, batch_size=batch_size, shard_size=shard_size, limit=limit,
                    dtype=dtype)
    return run_store(spec, out, dataset=dataset, stream=decomposer.stream, overwrite=overwrite,
                     progress=progress, backbone=decomposer.backbone, method=decomposer)


def run_store(spec, out=None, *, dataset=None, stream=None, **run_args) -> PRSStore:
    """Run (or resume, or reuse) the PRS job ``spec`` (see :func:`job_spec`) into ``out``
    (default ``default_job_dir(spec)``) with :func:`interpcore.engine.run_job` (``run_args``:
    ``engine``, ``device``, ``address``, ``num_workers``, ``overwrite``, ...), write the
    store's description next to the arrays and return the :class:`PRSStore`."""
    from interpcore.engine import default_job_dir, open_dataset, run_job
    from interpcore.engine.store import Location

    out = default_job_dir(spec) if out is None else out
    result = run_job(spec, out, **run_args)
    ds = dataset if dataset is not None else open_dataset(spec)
    meta = _store_meta(spec, result, ds, stream)
    loc = Location(str(out))
    try:
        current = loc.read_json(META_FILE)
    except (OSError, ValueError):
        current = None
    if current != meta:
        loc.write_bytes(META_FILE, (json.dumps(meta, indent=1) + "\n").encode())
    return PRSStore(out, result=result)


def _store_meta(spec, result, dataset, stream=None) -> dict:
    """What a PRS store says about itself (``prs.json``), from the job and its arrays."""
    arrays = result.arrays
    n, L, D = arrays["attn"]["shape"]
    hshape = arrays["heads"]["shape"]
    per_patch = bool(spec.call_options.get("per_patch"))
    grid = list(stream.grid_size) if stream is not None else None
    tokens = hshape[3] if per_patch and len(hshape) == 5 else (1 + grid[0] * grid[1] if grid else None)
    return {
        "version": STORE_VERSION, "spec_hash": spec.hash, "backbone": spec.backbone.removeprefix("object:"),
        "pretrained": spec.backbone_options.get("pretrained"),
        "dataset": getattr(dataset, "name", None) or spec.dataset,
        "dataset_name": getattr(dataset, "name", "?"), "split": spec.split,
        "classes": list(getattr(dataset, "classes", None) or []),
        "group_names": list(getattr(dataset, "group_names", None) or []),
        "n": int(n), "num_layers": int(L), "num_heads": int(hshape[2]) if hshape[2] else
        (stream.num_heads if stream is not None else 0), "tokens": tokens, "embed_dim": int(D),
        "grid_size": grid, "per_patch": per_patch,
        "head_layers": resolve_layers(spec.call_options.get("layers"), int(L)),
        "dtype": arrays["heads"]["dtype"], "normalized": True,
    }


class PRSStore:
    """A dataset's PRS decomposition: a finished :mod:`interpcore.engine` job folder.

    Contributions are stored **normalized** (divided by each image's ``|embedding|``), as
    the experiments of the paper use them; ``norm`` gives the factor back. Arrays are read
    lazily shard by shard (:class:`interpcore.engine.JobArray`: ``store.heads[rows]`` reads
    only the shards holding those rows, memory-mapped); ``samples`` holds each image's label,
    group, attributes, caption and path where the dataset has them (the job's Parquet
    tables); ``meta`` (``prs.json``) the model and dataset it was made from.
    """

    def __init__(self, path, result=None):
        from interpcore.engine import EngineError, job_result, read_manifest
        from interpcore.engine.store import Location

        self.path = path if "://" in str(path) else Path(path)  # a folder or an fsspec URL
        loc = Location(str(path))
        try:
            self.manifest = read_manifest(loc)
        except EngineError:
            raise InterpError(f"{self.path} is not a PRS store (no job manifest)") from None
        if not loc.exists(META_FILE):
            raise InterpError(f"{self.path} is not a PRS store (no {META_FILE}); run the PRS "
                              "job again to finish it")
        try:
            self.meta = loc.read_json(META_FILE)
        except (OSError, ValueError) as exc:
            raise InterpError(f"{loc.path(META_FILE)} is corrupt ({exc}); rerun the PRS job") from None
        if self.meta.get("version") != STORE_VERSION or self.meta.get("spec_hash") != self.manifest.get("spec_hash"):
            raise InterpError(f"{self.path} was written by another PRS store version or job; rerun")
        self.result = result if result is not None else job_result(str(path))
        self._arrays: dict = {}
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
        """Array ``name`` (a :class:`~interpcore.engine.JobArray`; ``mmap=False``: the whole
        array in memory)."""
        if name not in _ARRAYS:
            raise InterpError(f"a PRS store has no array '{name}'; it has {', '.join(_ARRAYS)}")
        if name not in self._arrays:
            from interpcore.engine import EngineError, JobArray

            try:
                self._arrays[name] = JobArray(str(self.path), name, self.manifest)
            except EngineError as exc:
                raise InterpError(f"{exc}; the store is incomplete, rerun the decomposition") from None
        a = self._arrays[name]
        return a if mmap else np.asarray(a)

    def __getattr__(self, name):
        if name in _ARRAYS:
            return self.array(name)
        raise AttributeError(name)

    @property
    def samples(self) -> list[dict]:
        if self._samples is None:
            from interpcore.engine import load_columns

            cols = load_columns(str(self.path), SAMPLE_FIELDS)
            self._samples = []
            for i in range(len(self)):
                rec = {"index": i}
                for k in SAMPLE_FIELDS:
                    v = cols[k][i]
                    if v is not None:
                        rec[k] = int(v) if k in ("label", "group") else v
                self._samples.append(rec)
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
