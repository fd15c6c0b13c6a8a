"""Spatial maps, segmentation metrics, spurious-feature removal and head-space search."""

import numpy as np
import pytest
import torch

import interpcore
from interp_prs.decompose import PRSDecomposer, decompose_dataset
from interp_prs.naive import naive_per_patch_heads
from interp_prs.search import agreement_at_k, head_space, nearest
from interp_prs.spatial import (SegmentationMeter, class_map, head_patch_maps, normalize_map,
                                patch_maps, segment_dataset)
from interp_prs.spurious import parse_heads, representation, spurious_study
from interpcore.testing import tiny_open_clip_backbone
from prs_tiny import pixels
from interpcore import InterpError


@pytest.fixture(scope="module")
def bb():
    return tiny_open_clip_backbone()


def test_patch_maps_equal_naive_projection(bb):
    dec = PRSDecomposer(bb, per_patch=True)
    x = pixels(2)
    r = dec.decompose(x)
    texts = torch.randn(3, 24)
    maps = patch_maps(r, texts, layers=[1, 2])
    naive = naive_per_patch_heads(dec.stream, bb.to_pixels(x))  # (N, L, H, T, D)
    expect = (naive[:, 1:3].sum(dim=(1, 2))[:, 1:] @ texts.T).permute(0, 2, 1).reshape(2, 3, 4, 4)
    torch.testing.assert_close(maps, expect, rtol=1e-4, atol=1e-6)
    one = patch_maps(r, texts[0], heads=[(2, 1)])
    torch.testing.assert_close(one[:, 0], (naive[:, 2, 1, 1:] @ texts[0]).reshape(2, 4, 4), rtol=1e-4, atol=1e-6)
    joint = head_patch_maps(r, texts[0], layers=[-1])
    assert list(joint) == [f"L2.H{h}" for h in range(4)]
    torch.testing.assert_close(sum(joint.values()), patch_maps(r, texts[0], layers=[2])[:, 0])
    with pytest.raises(InterpError, match="per-patch"):
        patch_maps(PRSDecomposer(bb).decompose(x), texts)


def test_class_map_and_normalize():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 1, 0, 0] = 3.0
    cm = class_map(maps, [1])
    assert cm[0, 0, 0] == pytest.approx(2.0) and cm[0, 1, 1] == 0
    up = normalize_map(cm[0], (4, 4))
    assert up.shape == (4, 4) and float(up.max()) == pytest.approx(1.0) and float(up.min()) == 0


def test_segmentation_meter_against_hand_counts():
    m = SegmentationMeter()
    heat = np.array([[0.9, 0.8], [0.1, 0.0]])
    target = np.array([[1, 0], [0, 0]])
    pred = m.add(heat, target)  # threshold = mean 0.45 -> top row predicted object
    assert pred.tolist() == [[1, 1], [0, 0]]
    s = m.summary()
    assert s["pixel_accuracy"] == pytest.approx(3 / 4)
    assert s["iou"]["object"] == pytest.approx(1 / 2)
    assert s["iou"]["background"] == pytest.approx(2 / 3)
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert s["map"] == pytest.approx(1.0)  # the object pixel has the highest score


def _write_tiny_mat(path, n=3, size=40):
    """A tiny file laid out like the paper's gtsegs_ijcv.mat (MATLAB v7.3 = HDF5)."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        val = f.create_group("value")
        img = val.create_dataset("img", (n, 1), dtype=h5py.ref_dtype)
        gt = val.create_dataset("gt", (n, 1), dtype=h5py.ref_dtype)
        for i in range(n):
            im = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            mask = np.zeros((size, size + 4), np.uint8)
            mask[5:20, 8:30] = 1
            d = refs.create_dataset(f"i{i}", data=im.transpose(2, 1, 0))
            dm = refs.create_dataset(f"m{i}", data=mask.T)
            cell = refs.create_dataset(f"c{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = dm.ref
            img[i, 0] = d.ref
            gt[i, 0] = cell.ref


def test_segment_imagenet_seg_file(bb, tmp_path):
    _write_tiny_mat(tmp_path / "gtsegs_ijcv.mat")
    ds = interpcore.get_dataset("imagenet-seg", root=tmp_path / "gtsegs_ijcv.mat")
    W = torch.nn.functional.normalize(torch.randn(5, 24), dim=-1)
    res = segment_dataset(PRSDecomposer(bb), ds, W, batch_size=2, out_dir=tmp_path / "figs", n_figures=2)
    assert res.n_images == 3
    assert 0 <= res.miou <= 1 and 0 <= res.pixel_accuracy <= 1 and 0 <= res.map <= 1
    assert len(res.figures) == 2 and all((tmp_path / "figs").glob("*.png"))


class _Groups(interpcore.Dataset):
    name = "tiny-groups"
    classes = ["a", "b"]
    group_names = ["a/0", "a/1", "b/0", "b/1"]

    def __init__(self, n=32, seed=0):
        from PIL import Image

        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            self.items.append({"image": Image.fromarray(arr), "label": (i // 2) % 2, "group": i % 4,
                               "attributes": {"colour": ["red", "blue"][i % 2]}})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def group_store(bb, tmp_path_factory):
    return decompose_dataset(PRSDecomposer(bb), _Groups(), out=tmp_path_factory.mktemp("g") / "s", batch_size=16)


def test_representation_with_ablated_heads(group_store):
    full = representation(group_store)
    unit = group_store.embedding / np.linalg.norm(group_store.embedding, axis=1, keepdims=True)
    assert np.abs(full - unit).max() < 1e-5
    heads = np.asarray(group_store.heads)
    abl = representation(group_store, [(2, 1), (1, 0)])
    expect = full - heads[:, 2, 1] - heads[:, 1, 0] + heads[:, 2, 1].mean(0) + heads[:, 1, 0].mean(0)
    assert np.abs(abl - expect).max() < 1e-5


def test_spurious_study_zero_shot_and_probe(group_store):
    W = np.random.default_rng(0).normal(size=(2, 24)).astype(np.float32)
    res = spurious_study(group_store, [(2, 0)], weights=W, backbone="tiny")
    pred = (representation(group_store) @ W.T).argmax(-1)
    y, g = group_store.labels, group_store.groups
    worst = min((pred[g == k] == y[g == k]).mean() * 100 for k in range(4))
    assert res.before["worst"] == pytest.approx(worst)
    assert set(res.before["groups"]) == {"a/0", "a/1", "b/0", "b/1"}
    probe = spurious_study(group_store, [(2, 0)], train_store=group_store)
    assert probe.classifier.startswith("linear probe") and 0 <= probe.after["worst"] <= 100
    assert "worst group" in str(res)


def test_parse_heads():
    assert parse_heads("3.1, L2.H5,-1.0") == [(3, 1), (2, 5), (-1, 0)]
    with pytest.raises(InterpError, match="LAYER.HEAD"):
        parse_heads("3-1")


def test_nearest_neighbours_equal_brute_force(group_store):
    heads = [(2, 3), (1, 1)]
    res = nearest(group_store, heads, query=5, k=4)
    h = np.asarray(group_store.heads)
    x = h[:, 2, 3] + h[:, 1, 1]
    x = x - x.mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x[5]
    s[5] = -np.inf
    assert [nb["row"] for nb in res.neighbours] == list(np.argsort(-s)[:4])
    assert "colour" in res.agreement
    assert 0 <= agreement_at_k(group_store, heads, "colour", k=3) <= 1
    with pytest.raises(InterpError, match="out of range"):
        nearest(group_store, heads, query=999)
    assert head_space(group_store, heads).shape == (32, 24)


def test_search_agreement_covers_every_attribute_of_every_object(group_store):
    from interp_prs.search import attribute_values, top_direction_share

    attrs = {"background": "grass", "objects": [{"color": "red", "shape": "star"},
                                                {"color": "blue", "shape": "cross"}]}
    assert attribute_values(attrs) == {"background": frozenset({"grass"}),
                                       "color": frozenset({"red", "blue"}),
                                       "shape": frozenset({"star", "cross"})}
    # a scalar entry wins over the per-object one of the same name
    assert attribute_values({"color": "red", "objects": [{"color": "red"}]}) == {"color": frozenset({"red"})}
    # nearest() counts, per attribute, the neighbours sharing one of the query's values
    samples = group_store.samples
    res = nearest(group_store, [(2, 3)], query=0, k=5)
    q = attribute_values(samples[0].get("attributes"))
    for key, vals in q.items():
        want = np.mean([bool(vals & attribute_values(nb.get("attributes")).get(key, frozenset()))
                        for nb in res.neighbours])
        assert res.agreement[key] == pytest.approx(want)
    # the share of variance along the first direction: 1 for points on a line
    line = np.outer(np.linspace(-1, 1, 20), np.ones(6))
    assert top_direction_share(line) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert top_direction_share(rng.normal(size=(400, 6))) < 0.4
    assert 0 < res.top_direction_share <= 1 and "of the heads' variance" in str(res)
