"""The naive PRS computation, for checking and benchmarking only.

It does what a straightforward implementation (such as the paper's reference code) does:
for every layer it materializes the full ``(N, T, T, heads, width)`` tensor of every query
token's per-head, per-source-token attention contributions, then keeps the class token's
row and projects it. The result equals :mod:`interp_prs.decompose`'s per-patch heads, at a
memory cost of ``T x T x heads x width`` numbers per layer and image.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def naive_per_patch_heads(stream, pixels):
    """Per-patch head contributions ``(N, L, H, T, D)`` (own-mean centred, / actual std)."""
    x = stream.embed(pixels)
    N, T, W = x.shape
    H, dh = stream.num_heads, stream.head_dim
    gamma = stream.ln_post_weight.float()
    proj = stream.proj.float() if stream.proj is not None else torch.eye(W)
    raw = []
    for i in range(stream.num_layers):
        b = stream.block(i)
        q, k, v = b.qkv(b.ln_1(x))
        attn = ((q @ k.transpose(-1, -2)) * b.scale).softmax(-1)  # (N, H, T, T)
        Wo = b.out_proj_weight.T.reshape(H, dh, W)
        # every query, every source token, every head: (N, T, T, H, W)
        # as the reference does it: per (query, source, head) values, then out_proj per head
        z = torch.einsum("nhqs,nhsd->nqshd", attn, v)
        full = torch.einsum("nqshd,hdw->nqshw", z, Wo)
        del z
        full = b.ls_1(full)
        raw.append(full[:, 0].permute(0, 2, 1, 3).float().clone())  # copy: a view keeps `full` alive
        del full
        x = x + b.ls_1(stream.attention(i, b.ln_1(x)))
        x = x + b.ls_2(b.mlp(b.ln_2(x)))
    xc = x[:, 0].float()
    std = torch.sqrt(xc.var(-1, unbiased=False) + stream.ln_post_eps)
    out = []
    for r in raw:
        c = (r - r.mean(-1, keepdim=True)) * gamma / std[:, None, None, None]
        out.append(c @ proj)
    return torch.stack(out, dim=1)
