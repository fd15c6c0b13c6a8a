"""FALCON's steps one by one, on synthetic tensors and the tiny colour world (tests/falcon_toy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interpcore import InterpError
import falcon_toy as toy
from interp_falcon import steps


@pytest.fixture(scope="module")
def world():
    return toy.toy_target(), toy.ToyDataset(30)


# -- grouping --------------------------------------------------------------------------------


def _planted(n_img=200, n_feat=100, seed=0):
    """Noise plus two planted groups: images 0..19 fire features {3, 7}, 20..34 fire {11}."""
    g = torch.Generator().manual_seed(seed)
    reps = torch.rand(n_img, n_feat, generator=g) * 0.1
    reps[:20, 3] = 3.0
    reps[:20, 7] = 3.0
    reps[20:35, 11] = 3.0
    reps[35:40, 50] = 3.0  # only 5 images: too small a group
    return reps


def test_threshold_is_mean_plus_sigma_std_of_normalized_rows():
    reps = _planted()
    reps_n = steps.normalize_rows(reps)
    assert torch.allclose(reps_n.norm(dim=1), torch.ones(len(reps)), atol=1e-5)
    _, thr = steps.find_groups(reps_n, sigma=5.0)
    assert thr == pytest.approx(float(reps_n.mean() + 5 * reps_n.std()), rel=1e-6)


def test_groups_are_images_with_the_same_set_of_high_features():
    groups, _ = steps.find_groups(steps.normalize_rows(_planted()), sigma=5.0, min_images=10)
    got = {tuple(g.features): sorted(g.images) for g in groups}
    assert got == {(3, 7): list(range(20)), (11,): list(range(20, 35))}
    assert [g.id for g in groups] == [0, 1] and len(groups[0].images) >= len(groups[1].images)


def test_min_images_keeps_groups_of_exactly_that_size():
    groups, _ = steps.find_groups(steps.normalize_rows(_planted()), sigma=5.0, min_images=5)
    assert (50,) in {tuple(g.features) for g in groups}
    groups, _ = steps.find_groups(steps.normalize_rows(_planted()), sigma=5.0, min_images=6)
    assert (50,) not in {tuple(g.features) for g in groups}


def test_coactivation_groups_merge_features_that_fire_together():
    reps = _planted()
    reps[:20, 7] = 0.05
    reps[2:20, 7] = 3.0  # feature 7 fires on 18 of feature 3's 20 images: Jaccard 0.9
    groups, _ = steps.find_coactivation_groups(steps.normalize_rows(reps), sigma=5.0,
                                               min_images=10, min_jaccard=0.5)
    feats = {tuple(g.features) for g in groups}
    assert (3, 7) in feats and (11,) in feats
    g37 = next(g for g in groups if g.features == [3, 7])
    assert set(g37.images) == set(range(20))


def test_grouping_rejects_wrong_shapes():
    with pytest.raises(InterpError, match="images, features"):
        steps.find_groups(torch.zeros(4, 3, 2))


def test_rank_images_orders_by_group_activation():
    reps = _planted()
    reps[:20, 7] = 1.0
    reps[5, 7] = 3.0  # after normalization image 5 has the largest 3 + 7 sum
    reps_n = steps.normalize_rows(reps)
    g = steps.FeatureGroup([3, 7], list(range(20)))
    order = steps.rank_images(reps_n, g, 4)
    assert order[0] == 5 and len(order) == 4


# -- boxes and crops ---------------------------------------------------------------------------


def test_largest_box_picks_the_biggest_region():
    cam = np.zeros((20, 30), np.float32)
    cam[2:4, 2:4] = 1.0  # small island
    cam[10:18, 5:20] = 0.9  # big island
    cam[0, 29] = 0.59  # below threshold
    assert steps.largest_box(cam, 0.6) == (5, 10, 20, 18)


def test_largest_box_falls_back_to_whole_map():
    assert steps.largest_box(np.zeros((8, 6)), 0.6) == (0, 0, 6, 8)


def test_box_to_image_maps_resize_and_center_crop():
    # square input 10x10 of a 100x50 (W x H) image: centre 50x50 region, 5 px per input px
    assert steps.box_to_image((0, 0, 10, 10), (10, 10), (100, 50)) == (25, 0, 75, 50)
    assert steps.box_to_image((2, 4, 4, 6), (10, 10), (20, 20)) == (4, 8, 8, 12)


def test_in_place_view_keeps_the_box_at_its_size_and_place():
    from PIL import Image

    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = (200, 0, 0)  # left half red, right half black
    arr[2:5, 5:7] = (0, 0, 250)  # a blue patch on the right
    view = steps.in_place_view(Image.fromarray(arr), (5, 2, 7, 5))
    out = np.asarray(view)
    assert view.size == (8, 8)
    assert (out[2:5, 5:7] == (0, 0, 250)).all()
    outside = np.ones((8, 8), bool)
    outside[2:5, 5:7] = False
    expected = np.rint(arr[outside].astype(np.float64).mean(0))  # the mean of what is outside
    assert (out[outside] == expected).all()
    crops = steps.crop_views([{"image": Image.fromarray(arr)}], [0], [(5, 2, 7, 5)], "crop")
    assert crops[0].size == (2, 3)


def test_crop_view_comes_from_what_a_source_advertises():
    assert steps.crop_view_for(None) == "crop"  # the reference's
    assert steps.crop_view_for(None, None, {"crop_view": "in-place"}) == "in-place"
    assert steps.crop_view_for("crop", {"crop_view": "in-place"}) == "crop"  # the user's wins
    with pytest.raises(InterpError, match="unknown crop view 'zoom'"):
        steps.crop_view_for(None, {"crop_view": "zoom"})


def test_cam_class_names_and_error():
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    assert steps.cam_class("GradCAM") is GradCAM
    assert steps.cam_class("gradcam++") is GradCAMPlusPlus
    with pytest.raises(InterpError, match="unknown CAM method 'gradkam'.*gradcam"):
        steps.cam_class("gradkam")


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_gradcam_crop_finds_the_square(world, method):
    target, ds = world
    idx = [0, 3, 6, 9]  # red squares: feature 0 fires on them
    crops, boxes, maps = steps.group_crops(target, ds, idx, [0], method=method)
    assert len(crops) == 4 and maps[0].shape == (toy.SIZE, toy.SIZE)
    for i, b in zip(idx, boxes):
        assert _iou(b, ds[i]["attributes"]["box"]) > 0.7, (i, b, ds[i]["attributes"]["box"])


def test_gradcam_target_is_the_group_sum(world):
    target, ds = world
    pixels = target.to_pixels([ds[0]["image"]])  # a red square
    red = steps.gradcam_maps(target, pixels, [0])
    green = steps.gradcam_maps(target, pixels, [1])  # silent feature: no signal
    assert red.max() == pytest.approx(1.0, abs=1e-4)
    assert float(green.max()) == pytest.approx(0.0, abs=1e-6)


def test_gradcam_leaves_no_hooks_even_on_error(world):
    target, ds = world
    pixels = target.to_pixels([ds[0]["image"]])

    def count():
        return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
                   for m in target.model.modules())

    before = count()
    steps.gradcam_maps(target, pixels, [0])
    assert count() == before
    with pytest.raises(InterpError, match="out of range"):
        steps.gradcam_maps(target, pixels, [999])  # raised inside pytorch-grad-cam's forward
    assert count() == before


def test_cam_on_a_chosen_spatial_layer(world):
    target, ds = world
    pixels = target.to_pixels([ds[0]["image"]])
    # layer "conv": the chosen layer is spatial, so Grad-CAM targets it directly
    layers = steps.cam_target_layers(target, "conv", pixels)
    assert layers == [target.module("conv")]
    maps = steps.gradcam_maps(target, pixels, [0], layer="conv")
    x0, y0, x1, y1 = ds[0]["attributes"]["box"]
    assert maps[0][y0:y1, x0:x1].mean() > 5 * maps[0].mean() / 2


# -- features, score, low images ------------------------------------------------------------


def test_extract_features_pools_to_vectors(world):
    target, ds = world
    f = steps.extract_features(target, ds, batch_size=7)
    assert f.shape == (30, 64)
    assert torch.allclose(f[0], target.features([ds[0]["image"]])[0], atol=1e-6)
    fmap = steps.extract_features(target, ds, layer="act", limit=5)
    assert fmap.shape == (5, 64)  # spatial maps averaged over H, W
    assert torch.allclose(fmap, f[:5], atol=1e-6)


def test_interpretability_score():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # full matrix (reference): (3 + 2*1 + 0) / 9 ; distinct pairs only: 2/6
    assert steps.interpretability_score(z) == pytest.approx(5 / 9)
    assert steps.interpretability_score(z, include_self=False) == pytest.approx(1 / 3)


def test_low_activating_images_rule():
    torch.manual_seed(0)
    reps = torch.rand(50, 8) * 0.1
    reps[:10, 0] = 5.0  # group: feature 0, images 0..9, which are also high on feature 5
    reps[:10, 5] = 2.0
    reps[10:20, 5] = 2.0  # silent on feature 0, similar on the others -> low images
    reps[20:25, 0] = 0.5  # feature 0 above the mean: never low
    reps_n = steps.normalize_rows(reps)
    low = steps.low_activating_images(reps_n, [0], list(range(10)), count=10, min_similarity=0.3)
    assert set(low) == set(range(10, 20))
    assert not set(low) & set(range(20, 25))
    low3 = steps.low_activating_images(reps_n, [0], list(range(10)), count=3, min_similarity=0.3)
    assert len(low3) == 3 and set(low3) <= set(range(10, 20))
    with pytest.raises(InterpError, match="out of range"):
        steps.low_activating_images(reps_n, [8], [0])


def test_computed_default_layer_of_a_timm_classifier():
    """timm backbones' default layer 'pre_logits' is computed, not a module: Grad-CAM then
    targets the image encoder's pooled features."""
    timm_backbone = pytest.importorskip("interp_timm.backbone")
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    bb = timm_backbone.ClassifierBackbone("timm:resnet10t", model, library="timm", device="cpu")
    assert bb.default_layer == "pre_logits"
    x = torch.randn(2, 3, 64, 64)  # layer4 gives 2x2 maps (1x1 would normalize to 0)
    wrapper = steps.LayerOutput(bb)
    # the computed layer is the image encoder's output, through the public contract
    assert torch.allclose(bb.forward_features(x).detach(), bb.features(x), atol=1e-5)
    assert torch.allclose(wrapper(x), bb.features(x), atol=1e-5)
    maps = steps.gradcam_maps(bb, x, [0, 1, 2])
    assert maps.shape == (2, 64, 64) and 0.99 < maps.max() <= 1.0 + 1e-6
