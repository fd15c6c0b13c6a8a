"""PRS exactness: contributions sum to the image embedding (per image and per patch)."""

import json

import numpy as np
import pytest
import torch

import interpcore
from interp_prs.decompose import PRSDecomposer, PRSStore, decompose_dataset
from interp_prs.naive import naive_per_patch_heads
from interpcore.testing import tiny_open_clip_backbone
from prs_tiny import pixels, rel_err, tiny_hf_backbone
from interpcore import CapabilityError, InterpError

BACKBONES = {
    "open_clip": lambda: tiny_open_clip_backbone(),
    "open_clip+layerscale": lambda: tiny_open_clip_backbone(seed=3, ls_init_value=0.7),
    "transformers": lambda: tiny_hf_backbone(),
}


@pytest.fixture(scope="module", params=list(BACKBONES))
def backbone(request):
    return BACKBONES[request.param]()


def _max_rel(total, target):
    return float(((total - target).norm(dim=-1) / target.norm(dim=-1)).max())


def test_sum_equals_embedding_per_image(backbone):
    x = pixels(4)
    r = PRSDecomposer(backbone).decompose(x)
    z = backbone.encode_image(x)
    assert _max_rel(r.total(), z) < 1e-5
    assert _max_rel(r.head_total() + r.attn_bias, r.attn) < 1e-5
    n = r.normalize()
    assert _max_rel(n.total(), torch.nn.functional.normalize(z, dim=-1)) < 1e-5


def test_sum_equals_embedding_per_patch(backbone):
    x = pixels(3, seed=7)
    r = PRSDecomposer(backbone, per_patch=True).decompose(x)
    z = backbone.encode_image(x)
    s = backbone.residual_stream()
    T = 1 + s.grid_size[0] * s.grid_size[1]
    assert r.heads.shape == (3, s.num_layers, s.num_heads, T, z.shape[1])
    per_patch_total = r.embed + (r.heads.sum(dim=(2, 3)) + r.attn_bias).sum(1) + r.mlps.sum(1) + r.ln_bias
    assert _max_rel(per_patch_total, z) < 1e-5
    # class-token-to-itself terms are the token-0 slice of the per-patch heads
    assert rel_err(r.heads[:, :, :, 0].sum(2), r.attn_cls) < 1e-5


def test_per_patch_heads_match_naive_full_tensor(backbone):
    """Independent check of every (layer, head, token) value, not only of their sum."""
    x = pixels(2, seed=11)
    dec = PRSDecomposer(backbone, per_patch=True)
    r = dec.decompose(x)
    naive = naive_per_patch_heads(dec.stream, backbone.to_pixels(x))
    assert rel_err(r.heads, naive) < 1e-5


def test_layer_subset_keeps_exact_sum(backbone):
    x = pixels(2)
    r = PRSDecomposer(backbone, layers=1).decompose(x)  # last layer's heads only
    assert r.head_layers == [backbone.residual_stream().num_layers - 1]
    assert r.heads.shape[1] == 1
    assert _max_rel(r.total(), backbone.encode_image(x)) < 1e-5
    assert rel_err(r.head_total()[:, 0] + r.attn_bias[:, -1], r.attn[:, -1]) < 1e-5


def test_registry_and_capabilities():
    bb = tiny_open_clip_backbone()
    dec = interpcore.get_decomposer("prs", bb, per_patch=True)
    assert isinstance(dec, PRSDecomposer) and dec.per_patch
    bb.capabilities = frozenset({interpcore.Capability.IMAGE_ENCODER})
    with pytest.raises(CapabilityError, match="vit_residual_stream"):
        interpcore.get_decomposer("prs", bb)


def test_bad_layers_raise():
    bb = tiny_open_clip_backbone()
    with pytest.raises(InterpError, match="layer 7 does not exist"):
        PRSDecomposer(bb, layers=[7])
    with pytest.raises(InterpError, match="no images"):
        PRSDecomposer(bb).decompose([])


class _ListDataset(interpcore.Dataset):
    name = "tiny-list"
    classes = ["a", "b"]

    def __init__(self, n=7):
        from PIL import Image

        rng = np.random.default_rng(0)
        self.items = [
            {"image": Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
             "label": i % 2, "group": i % 4, "attributes": {"k": i}}
            for i in range(n)
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_streaming_store_matches_in_memory(tmp_path):
    from interpcore.engine import JobArray, read_manifest

    bb = tiny_open_clip_backbone()
    ds = _ListDataset(7)
    dec = PRSDecomposer(bb, layers=2)
    store = decompose_dataset(dec, ds, out=tmp_path / "store", batch_size=3, shard_size=3)
    assert isinstance(store, PRSStore) and len(store) == 7
    assert isinstance(store.heads, JobArray) and store.result.computed == [0, 1, 2]
    r = dec.decompose([s["image"] for s in ds.items], normalize=True)
    np.testing.assert_allclose(store.heads, r.heads.numpy(), rtol=1e-5, atol=1e-6)
    rows = [6, 0, 4, 3]  # across shards, out of order
    np.testing.assert_allclose(store.heads[rows, 1], r.heads.numpy()[rows, 1], rtol=1e-5, atol=1e-6)
    total = store.embed + store.attn.sum(1) + store.mlps.sum(1) + store.ln_bias
    unit = store.embedding / np.linalg.norm(store.embedding, axis=1, keepdims=True)
    assert np.abs(total - unit).max() < 1e-5
    assert store.labels.tolist() == [i % 2 for i in range(7)]
    assert store.samples[3]["attributes"] == {"k": 3}
    # same call again, with an equal dataset object: the finished job is reused, not recomputed
    shard = tmp_path / "store" / "arrays" / "heads" / "shard-00001.npy"
    before = shard.stat().st_mtime_ns
    again = decompose_dataset(dec, _ListDataset(7), out=tmp_path / "store", batch_size=3, shard_size=3)
    assert again.result.computed == [] and again.result.skipped == [0, 1, 2]
    assert shard.stat().st_mtime_ns == before
    assert read_manifest(tmp_path / "store")["status"] == "complete"


def test_a_failed_store_resumes_with_only_the_missing_shards(tmp_path, monkeypatch):
    """A run that stops mid-way (here: the decomposer raises on the third shard, as a killed
    worker would stop) keeps the shards it finished; the rerun computes only the rest and
    gives the numbers of an uninterrupted run."""
    from interpcore.engine import read_manifest

    bb = tiny_open_clip_backbone()
    dec = PRSDecomposer(bb)
    ds = _ListDataset(5)
    calls = []
    real = dec.decompose

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a Ctrl-C or a kill signal handler raises
        return real(*args, **kw)

    monkeypatch.setattr(dec, "decompose", flaky)
    with pytest.raises(KeyboardInterrupt):
        decompose_dataset(dec, ds, out=tmp_path / "s", batch_size=2, shard_size=2)
    m = read_manifest(tmp_path / "s")
    assert m["status"] == "interrupted" and m["shards_done"] == 2
    with pytest.raises(InterpError, match="not a PRS store"):
        PRSStore(tmp_path / "s")
    store = decompose_dataset(dec, ds, out=tmp_path / "s", batch_size=2, shard_size=2)
    assert store.result.computed == [2] and store.result.skipped == [0, 1]
    monkeypatch.setattr(dec, "decompose", real)
    ref = decompose_dataset(dec, ds, out=tmp_path / "ref", batch_size=2, shard_size=2)
    for name in ("embedding", "attn", "heads", "mlps", "ln_bias"):
        np.testing.assert_array_equal(store.array(name, mmap=False), ref.array(name, mmap=False))


def test_corrupt_store_raises(tmp_path):
    bb = tiny_open_clip_backbone()
    store = decompose_dataset(PRSDecomposer(bb), _ListDataset(3), out=tmp_path / "s")
    (store.path / "prs.json").write_text("{broken")
    with pytest.raises(InterpError, match="corrupt"):
        PRSStore(store.path)
    with pytest.raises(InterpError, match="not a PRS store"):
        PRSStore(tmp_path)
