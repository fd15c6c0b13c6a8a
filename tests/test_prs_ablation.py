"""Mean-ablation study on a PRS store: each row equals a direct recomputation."""

import numpy as np
import pytest

import interpcore
from interp_prs.ablation import mean_ablation_study, plot_ablation
from interp_prs.decompose import PRSDecomposer, decompose_dataset
from interpcore.testing import tiny_images, tiny_open_clip_backbone
from interpcore import InterpError


def _Images(n=30):
    return tiny_images(n, seed=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    bb = tiny_open_clip_backbone()
    return decompose_dataset(PRSDecomposer(bb), _Images(), out=tmp_path_factory.mktemp("s") / "store",
                             batch_size=8)


def _acc(rep, W, y):
    return float(((rep @ W.T).argmax(-1) == y).mean() * 100)


def test_rows_match_direct_computation(store, tmp_path):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, store.embed.shape[1])).astype(np.float32)
    y = store.labels
    res = mean_ablation_study(store, W, y, backbone="tiny")
    embed, attn, cls, mlps, lnb = (np.asarray(store.array(k)) for k in ("embed", "attn", "attn_cls", "mlps", "ln_bias"))
    full = embed + attn.sum(1) + mlps.sum(1) + lnb
    acc = {r["ablation"]: r["accuracy"] for r in res.rows}
    assert acc["all components"] == pytest.approx(_acc(full, W, y))
    no_mlp = attn.sum(1) + (embed + mlps.sum(1)).mean(0) + lnb
    assert acc["MLPs (and input term) mean-ablated"] == pytest.approx(_acc(no_mlp, W, y))
    no_cls = embed + (attn - cls + cls.mean(0)).sum(1) + mlps.sum(1) + lnb
    assert acc["class-token self-attention mean-ablated"] == pytest.approx(_acc(no_cls, W, y))
    L = attn.shape[1]
    for j in range(L):
        a = attn.copy()
        a[:, : j + 1] = attn[:, : j + 1].mean(0)
        assert res.cumulative_attention[j] == pytest.approx(_acc(embed + a.sum(1) + mlps.sum(1) + lnb, W, y))
    assert len(res.rows) == 4 + L
    png = plot_ablation(res, tmp_path / "ablation.png")
    assert png.endswith(".png") and (tmp_path / "ablation.png").stat().st_size > 1000
    assert "Mean-ablation study" in str(res) and res.table()["rows"][0][0] == "all components"


def test_unlabelled_store_raises(store):
    W = np.ones((3, store.embed.shape[1]), np.float32)
    with pytest.raises(InterpError, match="no image"):
        mean_ablation_study(store, W, -np.ones(len(store), int))


def test_store_representation_mean_ablates_the_named_heads(store):
    """The public ``PRSStore.representation`` (used by the shapes plugin's ground truth): the
    sum of every stored contribution, with the named heads replaced by their store mean."""
    embed, attn, mlps, lnb, heads = (np.asarray(store.array(k), np.float64)
                                     for k in ("embed", "attn", "mlps", "ln_bias", "heads"))
    full = embed + attn.sum(1) + mlps.sum(1) + lnb
    np.testing.assert_allclose(store.representation(), full, rtol=1e-5, atol=1e-6)
    # the sum of the contributions is the normalized embedding
    emb = np.asarray(store.array("embedding"), np.float64)
    np.testing.assert_allclose(full, emb / np.linalg.norm(emb, axis=1, keepdims=True), atol=1e-4)
    j = store.head_index(2)
    ablated = full - heads[:, j, 1] + heads[:, j, 1].mean(0)
    np.testing.assert_allclose(store.representation([(2, 1)]), ablated, rtol=1e-5, atol=1e-6)
    assert not np.allclose(store.representation([(2, 1)]), full)


def test_ablation_figure_has_whole_layer_ticks_and_a_visible_reference_line():
    from interpcore import figures

    fig = figures.line_plot([0, 1, 2], {"ablated": [90, 50, 20], "no ablation": [90] * 3,
                                        "class-token terms ablated": [90] * 3},
                            dashed=("no ablation",))
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0, 1, 2]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ref = lines["no ablation"]
    assert ref.get_linestyle() == "--" and ref.get_zorder() > lines["class-token terms ablated"].get_zorder()
