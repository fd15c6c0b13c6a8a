"""TextSpan: the batched sufficient-statistics algorithm equals the direct greedy loop."""

import numpy as np
import pytest
import torch

import interpcore
from interp_prs.decompose import PRSDecomposer, decompose_dataset
from interp_prs.textspan import TextSpanExplainer, greedy_text_basis, head_statistics, load_result
from interpcore.testing import tiny_images, tiny_open_clip_backbone
from interpcore import InterpError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))


def direct_greedy(data, texts, iters, rank):
    """The paper's procedure written out directly on the data matrix of one head."""
    _, _, vh = np.linalg.svd(data, full_matrices=False)
    vh = vh[:rank]
    t = texts @ vh.T @ vh
    mean = data.mean(0, keepdims=True)
    x = data - mean
    recon = np.repeat(mean, len(x), 0)
    chosen = []
    for _ in range(iters):
        j = int(np.argmax((x @ t.T).std(0)))
        chosen.append(j)
        d = t[j]
        coef = x @ d / (d @ d)
        recon = recon + coef[:, None] * d
        x = x - coef[:, None] * d
        t = t - (t @ d / (d @ d))[:, None] * d
    return chosen, recon


def test_batched_basis_equals_direct_loop():
    rng = np.random.default_rng(0)
    K, n, D, m = 3, 60, 12, 40
    # heads with a few strong directions so the choices are well separated
    data = np.stack([rng.normal(size=(n, 4)) * [5, 3, 2, 1] @ rng.normal(size=(4, D))
                     + 0.1 * rng.normal(size=(n, D)) + rng.normal(size=D) for _ in range(K)])
    texts = rng.normal(size=(m, D))
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    mean, gram, nn = head_statistics(iter([data.transpose(1, 0, 2)[:25], data.transpose(1, 0, 2)[25:]]), K, D)
    basis = greedy_text_basis(mean, gram, nn, texts, iters=5, rank=8)
    for k in range(K):
        chosen, recon = direct_greedy(data[k], texts, 5, 8)
        assert basis.indices[k].tolist() == chosen
        got = (torch.as_tensor(data[k]) - basis.mean[k]) @ basis.R[k] + basis.mean[k]
        np.testing.assert_allclose(got.numpy(), recon, rtol=1e-6, atol=1e-8)
    # explained fractions are positive, decreasing-ish, and sum to <= 1
    assert (basis.explained >= 0).all() and (basis.explained.sum(1) <= 1 + 1e-9).all()


def test_basis_input_checks():
    with pytest.raises(InterpError, match="shape"):
        greedy_text_basis(torch.zeros(2, 4), torch.eye(4).expand(2, 4, 4), 10, torch.zeros(5, 3))
    with pytest.raises(InterpError, match="at least two images"):
        head_statistics(iter([np.zeros((1, 2, 4))]), 2, 4)


def _Images(n=24):
    return tiny_images(n, seed=1)


def test_explainer_end_to_end(tmp_path):
    bb = tiny_open_clip_backbone()
    pool = ["a red thing", "a blue thing", "grass", "water", "a circle", "a square", "snow", "sand"]
    ex = interpcore.get_explainer("textspan", bb, pool=pool, layers=2, texts_per_head=3, rank=6)
    res = ex.explain(_Images(), batch_size=10)
    L = 3
    assert res.layers == [L - 2, L - 1]
    assert len(res.heads) == 2 * 4
    for h in res.heads:
        assert len(h["texts"]) == 3 and set(h["texts"]) <= set(pool)
        assert 0 <= h["total_explained"] <= 1
    assert set(res.accuracy) and all(0 <= v <= 100 for v in res.accuracy.values())
    files = res.write(tmp_path)
    text = (tmp_path / "textspan_heads.txt").read_text()
    assert "Layer 2, Head 3" in text
    back = load_result(tmp_path)
    assert back.heads == res.heads
    assert res.matching_heads("grass|water|snow|sand", top=3) == [
        (h["layer"], h["head"]) for h in res.heads if {"grass", "water", "snow", "sand"} & set(h["texts"])]
    assert len(files) == 2
    v = res.verification
    assert v.passed and v.value < 1e-9, v
    assert type(res).load(res.save(tmp_path / "saved")).heads == res.heads


def test_reconstruction_gap_catches_a_basis_that_is_not_orthogonal():
    from interp_prs.textspan import reconstruction_gap

    rng = np.random.default_rng(3)
    data = rng.normal(size=(50, 2, 6)) @ np.diag([4, 3, 2, 1, 0.5, 0.2])
    texts = rng.normal(size=(20, 6))
    mean, gram, n = head_statistics(iter([data]), 2, 6)
    basis = greedy_text_basis(mean, gram, n, texts, iters=3, rank=6)
    assert reconstruction_gap(basis, gram, n) < 1e-9
    basis.explained[0, 0] += 0.05  # a share credited that the reconstruction does not capture
    assert reconstruction_gap(basis, gram, n) == pytest.approx(0.05, rel=1e-6)


def test_explainer_needs_recorded_layers(tmp_path):
    bb = tiny_open_clip_backbone()
    store = decompose_dataset(PRSDecomposer(bb, layers=[0]), _Images(6), out=tmp_path / "s")
    ex = TextSpanExplainer(bb, pool=["x", "y"], layers=1)
    with pytest.raises(InterpError, match="no heads for layers"):
        ex.explain(store)


def test_rank_defaults_to_the_head_dimension_and_choices_are_stable_under_noise():
    """Above a head's numerical rank the extra directions are rounding noise: the default
    rank (the head dimension, clamped to the numerical rank) gives the same texts and
    variance shares after a 1e-7 relative perturbation of the head outputs."""
    import torch

    from interp_prs.textspan import greedy_text_basis

    g = torch.Generator().manual_seed(0)
    K, n, dh, D, m = 3, 200, 6, 40, 300
    A = torch.randn(K, dh, D, generator=g, dtype=torch.float64)  # each head spans dh directions
    X = (torch.randn(K, n, dh, generator=g, dtype=torch.float64) + 0.3) @ A
    texts = torch.nn.functional.normalize(torch.randn(m, D, generator=g, dtype=torch.float64), dim=-1)

    def basis(Xs, rank=None):
        return greedy_text_basis(Xs.mean(1), Xs.transpose(1, 2) @ Xs, n, texts, iters=5, rank=rank)

    ref = basis(X)
    assert ref.rank == dh  # clamped to the numerical rank
    for trial in range(4):
        noise = torch.randn(X.shape, generator=g, dtype=torch.float64)
        Xp = X + 1e-7 * X.norm() / noise.norm() * noise
        got = basis(Xp)
        assert torch.equal(got.indices, ref.indices), trial
        assert torch.allclose(got.explained, ref.explained, atol=1e-6), trial
    assert basis(X, rank=80).rank == dh  # an explicit larger rank is clamped too


def test_textspan_explainer_clamps_a_rank_above_the_head_dimension():
    import pytest

    import interpcore

    bb = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    assert interpcore.get_explainer("textspan", bb).rank == 12
    with pytest.warns(UserWarning, match="rank 80 is above the head dimension 12"):
        assert interpcore.get_explainer("textspan", bb, rank=80).rank == 12
    with pytest.raises(interpcore.InterpError, match="rank must be at least 1"):
        interpcore.get_explainer("textspan", bb, rank=0)
