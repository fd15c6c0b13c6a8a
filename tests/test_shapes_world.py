"""The shapes world (interp_shapes): generator, datasets, vocabularies. No torch needed."""

from __future__ import annotations

import functools
import re
import subprocess
import sys

import numpy as np
import pytest

import interpcore
from interpcore import InterpError
from interp_shapes import world
from interp_shapes.datasets import ShapesDataset, SpuriousShapesDataset


def _same(a, b):
    return (np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
            and np.array_equal(a["mask"], b["mask"]) and a["caption"] == b["caption"])


# -- attributes ------------------------------------------------------------------------


def test_attribute_counts_meet_the_issue():
    assert len(world.COLORS) >= 8 and len(world.SHAPES) >= 5 and len(world.POSITIONS) >= 5
    assert len(world.SIZES) == 2 and len(world.BACKGROUNDS) >= 4


def test_colour_words_and_background_words_do_not_overlap():
    colour_words = {w for syns in world.COLOR_SYNONYMS.values() for s in syns for w in s.split()}
    bg_words = {w for phrases in world.BACKGROUND_PHRASES.values() for p in phrases for w in p.split()}
    assert not colour_words & bg_words, colour_words & bg_words


def test_object_colours_are_distinct():
    cols = np.array(list(world.COLORS.values()), float)
    d = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + np.eye(len(cols)) * 1e9
    assert d.min() > 60, d.min()


# -- determinism -----------------------------------------------------------------------


def test_sample_depends_only_on_seed_split_index():
    a = ShapesDataset("train", n=50, seed=3)
    b = ShapesDataset("train", n=50, seed=3)
    forward = [a[i] for i in (0, 7, 42)]
    backward = [b[i] for i in (42, 7, 0)][::-1]
    assert all(_same(x, y) for x, y in zip(forward, backward))


def test_splits_and_seeds_give_different_images():
    base = ShapesDataset("test", n=10, seed=0)
    for other in (ShapesDataset("train", n=10, seed=0), ShapesDataset("val", n=10, seed=0),
                  ShapesDataset("test", n=10, seed=1)):
        differing = sum(not _same(base[i], other[i]) for i in range(10))
        assert differing == 10, f"{other} repeats images of {base}"


def test_negative_index_and_out_of_range():
    ds = ShapesDataset("test", n=5)
    assert _same(ds[-1], ds[4])
    with pytest.raises(IndexError):
        ds[5]


def test_bad_options_raise_interp_errors():
    with pytest.raises(InterpError, match="split"):
        ShapesDataset("training")
    with pytest.raises(InterpError, match="one_object_prob"):
        ShapesDataset("test", one_object_prob=1.5)
    with pytest.raises(InterpError, match="n must be"):
        ShapesDataset("test", n=-1)


# -- images and masks ------------------------------------------------------------------


def test_sample_dict_has_the_dataset_contract():
    s = ShapesDataset("test", n=3)[0]
    assert s["image"].mode == "RGB" and s["image"].size == (32, 32)
    assert s["mask"].shape == (32, 32) and s["mask"].dtype.kind == "i"
    assert isinstance(s["caption"], str) and s["caption"]
    assert ShapesDataset.classes[s["label"]] == s["attributes"]["objects"][0]["shape"]


def test_mask_pixels_have_the_object_colour():
    ds = ShapesDataset("test", n=60, one_object_prob=1.0)
    for i in range(60):
        s = ds[i]
        img = np.asarray(s["image"]).astype(float)
        inside = img[s["mask"] == 1]
        # every inside pixel is at least half covered by the object: the mean colour inside
        # the mask is nearest to the object's colour among all object colours
        names = list(world.COLORS)
        cols = np.array([world.COLORS[c] for c in names], float)
        nearest = names[int(np.linalg.norm(cols - inside.mean(0), axis=1).argmin())]
        assert nearest == s["attributes"]["color"], (i, s["attributes"], inside.mean(0))


def test_mask_geometry_follows_position_and_size():
    ds = ShapesDataset("test", n=200, one_object_prob=1.0)
    areas = {"small": [], "large": []}
    for i in range(200):
        s = ds[i]
        ys, xs = np.nonzero(s["mask"] == 1)
        cy, cx = ys.mean() / 32, xs.mean() / 32
        pos = s["attributes"]["position"]
        want_x = 0.5 if pos == "center" else (0.25 if "left" in pos else 0.75)
        want_y = 0.5 if pos == "center" else (0.25 if "top" in pos else 0.75)
        assert abs(cx - want_x) < 0.1 and abs(cy - want_y) < 0.1, (pos, cx, cy)
        areas[s["attributes"]["size"]].append(len(ys))
    assert max(areas["small"]) < min(areas["large"])


def test_two_object_images_have_two_masked_objects_at_distinct_positions():
    ds = ShapesDataset("test", n=100, one_object_prob=0.0)
    for i in range(100):
        s = ds[i]
        objs = s["attributes"]["objects"]
        assert len(objs) == 2 and objs[0]["position"] != objs[1]["position"]
        assert (s["mask"] == 1).sum() > 0 and (s["mask"] == 2).sum() > 0
        assert set(np.unique(s["mask"])) <= {0, 1, 2}


def test_one_object_prob_controls_object_count():
    ds = ShapesDataset("test", n=400, one_object_prob=0.7)
    ones = sum(len(ds[i]["attributes"]["objects"]) == 1 for i in range(400))
    assert 0.6 < ones / 400 < 0.8


def test_attributes_cover_every_value():
    ds = ShapesDataset("test", n=600)
    seen = {k: set() for k in world.ATTRIBUTES}
    for i in range(600):
        a = ds[i]["attributes"]
        seen["background"].add(a["background"])
        for o in a["objects"]:
            for k in ("color", "shape", "size", "position"):
                seen[k].add(o[k])
    for k, values in world.ATTRIBUTES.items():
        assert seen[k] == set(values), k


# -- captions and vocabularies ---------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _training_captions(n=3000):
    """Captions exactly as the CLIP's training saw them (shapes + shapes-spurious train)."""
    main = ShapesDataset("train", n=n)
    spur = SpuriousShapesDataset("train", n=n // 4)
    return [ds[i]["caption"] for ds in (main, spur) for i in range(len(ds))]


def test_captions_mention_the_true_attributes():
    ds = ShapesDataset("test", n=300, one_object_prob=1.0)
    for i in range(300):
        s = ds[i]
        a = s["attributes"]
        cap = s["caption"]
        for syns, key in ((world.COLOR_SYNONYMS, "color"), (world.SHAPE_SYNONYMS, "shape"),
                          (world.SIZE_SYNONYMS, "size")):
            for value, words in syns.items():
                if value != a[key]:
                    # a wrong synonym never appears as a whole phrase
                    for w in set(words) - set(syns[a[key]]):
                        assert not re.search(rf"\b{w}\b", cap), (cap, a)


def test_captions_use_several_templates_and_synonyms():
    caps = [ShapesDataset("test", n=400)[i]["caption"] for i in range(400)]
    assert len(set(caps)) > 300
    joined = " | ".join(caps)
    for w in ("crimson", "disk", "tiny", "in the middle", " and ", "that is", "there is"):
        assert w in joined, w


def test_shapes_vocabulary_contains_only_words_seen_in_training_captions():
    vocab = interpcore.get_vocabulary("shapes")
    corpus = " | ".join(_training_captions())
    unseen = [c for c in vocab if not re.search(rf"\b{re.escape(c)}\b", corpus)]
    assert not unseen, f"vocabulary entries never seen in training captions: {unseen}"
    # and it covers every attribute value's words
    for value_words in (world.COLOR_SYNONYMS, world.SHAPE_SYNONYMS, world.SIZE_SYNONYMS):
        for words in value_words.values():
            assert set(words) <= set(vocab.concepts)


def test_zero_shot_template_words_are_seen_in_training_captions():
    words = set(" | ".join(_training_captions()).replace("|", " ").split())
    for attr, templates in world.ZEROSHOT_TEMPLATES.items():
        for t in templates:
            for name in world.ZEROSHOT_CLASSNAMES[attr].values():
                missing = set(t.replace("{}", name).split()) - words
                assert not missing, (t, name, missing)


def test_caption_pool_is_large_distinct_and_deterministic():
    pool = interpcore.get_vocabulary("shapes-captions")
    assert len(pool) >= 5000 and len(set(pool.concepts)) == len(pool)
    again = interpcore.get_vocabulary("shapes-captions", size=100)
    assert again.concepts == pool.concepts[:100]
    shapes_in_pool = {s for s in world.SHAPES if any(s in c for c in pool)}
    assert shapes_in_pool == set(world.SHAPES)


def test_stress_vocabulary_extends_shapes_vocabulary():
    base = interpcore.get_vocabulary("shapes").concepts
    stress = interpcore.get_vocabulary("shapes-stress").concepts
    assert stress[: len(base)] == base and len(stress) > len(base) + 100


def test_vocabulary_bad_size_and_options():
    with pytest.raises(InterpError, match="size"):
        interpcore.get_vocabulary("shapes", size=0)


# -- shapes-spurious -------------------------------------------------------------------


def test_spurious_train_split_agrees_95_percent():
    ds = SpuriousShapesDataset("train", n=2000)
    groups = np.array([ds[i]["group"] for i in range(2000)])
    agree = np.isin(groups, [0, 3]).mean()
    assert 0.93 < agree < 0.97, agree
    assert set(groups) == {0, 1, 2, 3}


def test_spurious_test_split_is_balanced_and_labels_are_true():
    ds = SpuriousShapesDataset("test", n=400)
    groups = [ds[i]["group"] for i in range(400)]
    assert np.bincount(groups).tolist() == [100, 100, 100, 100]
    for i in range(0, 400, 7):
        s = ds[i]
        assert ds.classes[s["label"]] == s["attributes"]["shape"]
        assert s["attributes"]["background"] == ds.backgrounds[s["group"] % 2]
        assert s["group"] // 2 == s["label"]
        assert {"image", "mask", "caption", "attributes", "label", "group"} <= set(s)


def test_spurious_images_differ_from_shapes_images():
    a, b = ShapesDataset("test", n=5), SpuriousShapesDataset("test", n=5)
    assert not any(_same(a[i], b[i]) for i in range(5))


# -- registry --------------------------------------------------------------------------


def test_registered_names_and_no_torch_on_listing():
    code = ("import sys, interpcore; d = interpcore.list_datasets(); v = interpcore.list_vocabularies(); "
            "interpcore.get_dataset('shapes')[0]; interpcore.get_vocabulary('shapes'); "
            "print({'shapes', 'shapes-spurious'} <= set(d), "
            "{'shapes', 'shapes-captions', 'shapes-stress'} <= set(v), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False"], out.stdout + out.stderr


def test_get_dataset_passes_options():
    ds = interpcore.get_dataset("shapes", split="val", n=7, seed=5, one_object_prob=1.0)
    assert len(ds) == 7 and ds.split == "val" and ds.seed == 5
    assert all(len(ds[i]["attributes"]["objects"]) == 1 for i in range(7))
