"""PRS's second convention: the reference code's split of the final LayerNorm's mean and bias
and of the out-projection biases, checked against a direct evaluation of its formula."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import interpcore
from interpcore import InterpError

ROOT = Path(__file__).resolve().parents[1]
IMAGES = [str(ROOT / "examples" / n) for n in ("red_circle.png", "blue_square_on_water.png")]


@pytest.fixture(scope="module")
def bb():
    return interpcore.get_backbone("shapes:clip-vit", device="cpu")


def _reference_formula(bb, pixels):
    """Every term in the residual stream's own space, then the reference's rule: a term ``t``
    that is one of ``k`` equal shares gives ``(gamma * (t - mean(x) / k) / std + beta / k) @ proj``,
    all divided by ``|z|``. Per-head terms carry 1/H of their layer's out-projection bias."""
    s = bb.residual_stream()
    with torch.no_grad():
        x = s.embed(pixels)
        N, T, W = x.shape
        L, H, dh = s.num_layers, s.num_heads, s.head_dim
        terms_mlp, terms_head = [x[:, 0]], []
        for i in range(L):
            b = s.block(i)
            q, k, v = b.qkv(b.ln_1(x))
            a = ((q @ k.transpose(-1, -2)) * b.scale).softmax(-1)[:, :, 0]  # (N, H, T)
            Wo = b.out_proj_weight.T.reshape(H, dh, W)
            per_head = torch.einsum("nht,nhtd,hdw->nhw", a, v, Wo) + b.out_proj_bias / H
            terms_head.append(b.ls_1(per_head))
            x = x + b.ls_1(s.attention(i, b.ln_1(x)))
            m = b.ls_2(b.mlp(b.ln_2(x)))
            terms_mlp.append(m[:, 0])
            x = x + m
        xc = x[:, 0]
        mu = xc.mean(-1)
        std = torch.sqrt(xc.var(-1, unbiased=False) + s.ln_post_eps)
        z = s.post(xc)
        K = 2 * L + 1

        def project(t, k):
            shape = (-1,) + (1,) * (t.dim() - 1)
            y = s.ln_post_weight * (t - (mu / k).reshape(shape)) / std.reshape(shape) + s.ln_post_bias / k
            return (y @ s.proj) / z.norm(dim=-1).reshape(shape)

        mlps = torch.stack([project(t, K) for t in terms_mlp], dim=1)  # (N, L + 1, D)
        heads = torch.stack([project(t, K * H) for t in terms_head], dim=1)  # (N, L, H, D)
    return heads, mlps


@pytest.mark.parametrize("per_patch", [False, True])
def test_reference_convention_equals_the_reference_formula(bb, per_patch):
    pixels = bb.to_pixels(IMAGES)
    want_heads, want_mlps = _reference_formula(bb, pixels)
    res = interpcore.get_decomposer("prs", bb).decompose(pixels, convention="reference",
                                                         per_patch=per_patch)
    got = res.reference_arrays()
    for name, got_a, want in (("attentions", got["attentions"], want_heads), ("mlps", got["mlps"], want_mlps)):
        err = float((torch.as_tensor(got_a) - want).abs().max() / want.abs().max())
        assert err < 1e-5, f"{name}: {err:.2e} from the reference formula"
    assert res.max_relative_error() < 1e-5  # the shares still sum to z / |z|
    assert res.convention == "reference" and res.normalized


def test_the_two_conventions_differ_per_head_but_not_in_total(bb):
    prs = interpcore.get_decomposer("prs", bb)
    c = prs.decompose(IMAGES).normalize()
    r = prs.decompose(IMAGES, convention="reference")
    assert torch.allclose(c.total(), r.total(), atol=1e-5)
    rel = (r.heads - c.heads).norm(dim=-1) / c.heads.norm(dim=-1)
    assert float(rel.median()) > 1e-3  # a real difference, which docs/prs.md documents


def test_unknown_convention_and_partial_layers_are_refused(bb):
    prs = interpcore.get_decomposer("prs", bb)
    with pytest.raises(InterpError, match="unknown PRS convention 'paper'; use one of centred, reference"):
        prs.decompose(IMAGES[:1], convention="paper")
    with pytest.raises(InterpError, match="leave layers unset"):
        prs.decompose(IMAGES[:1], convention="reference", layers=2)
    with pytest.raises(InterpError, match="needs decompose"):
        prs.decompose(IMAGES[:1]).reference_arrays()
