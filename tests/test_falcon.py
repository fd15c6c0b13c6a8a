"""FALCON end to end on the tiny colour world: explainer API, outputs, CLI, registry."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

import interpcore
from interpcore import InterpError
import falcon_toy as toy
from interp_falcon.explainer import Falcon, load_groups
from interp_falcon.pool import TensorPool, dedup_texts, embed_texts


@pytest.fixture(scope="module")
def parts():
    cap = toy.toy_captioner()
    texts = dedup_texts(toy.toy_captions())
    pool = TensorPool(texts, embed_texts(cap, texts, cache=False), name="toy-captions")
    return toy.toy_target(), cap, pool, toy.ToyDataset(60)


@pytest.fixture(scope="module")
def explained(parts):
    target, cap, pool, ds = parts
    f = Falcon(target, captioner=cap, pool=pool, low_min_similarity=0.0, max_images=12)
    groups = f.find_groups(ds)
    return f, f.explain(groups)


def test_groups_are_the_colour_detectors(explained):
    _, res = explained
    assert {tuple(g.features) for g in res.groups} == {(0,), (1,), (2,)}
    for g in res.groups:
        colours = {toy.ToyDataset(60)[i]["attributes"]["colour"] for i in g.images}
        assert colours == {list(toy.COLOURS)[g.features[0]]}
        assert len(g.used_images) == 12 and g.interpretable


def test_top_word_is_the_colour_and_shared_words_are_removed(explained):
    _, res = explained
    for g in res.groups:
        colour = list(toy.COLOURS)[g.features[0]]
        print(g.id, g.features, g.words[:3], g.phrases[:3])
        assert g.words[0][0] == colour
        # "square" also describes the low images (other colours): contrastive removal
        assert "square" not in [w for w, _ in g.words]
        assert g.phrases[0][0].startswith(colour)
        assert len(g.captions_high) == 12 and all(len(c) == 5 for c in g.captions_high)
        assert g.low_images and all(i not in g.images for i in g.low_images)


def test_all_groups_captioned_in_one_pool_pass(parts, monkeypatch):
    target, cap, pool, ds = parts
    passes = []
    orig = pool.chunks

    def counting(chunk_size):
        passes.append(1)
        yield from orig(chunk_size)

    monkeypatch.setattr(pool, "chunks", counting)
    f = Falcon(target, captioner=cap, pool=pool, low_min_similarity=0.0, max_images=5)
    res = f.explain(ds)
    assert len([g for g in res.groups if g.words]) == 3
    assert len(passes) == 1


def test_uninterpretable_groups_are_not_explained_by_default(parts):
    target, cap, pool, ds = parts
    f = Falcon(target, captioner=cap, pool=pool, score_threshold=1.01, max_images=5)
    res = f.explain(ds)
    assert not res.interpretable and all(not g.words for g in res.groups)
    res = f.explain(res, which=["1"])
    assert [bool(g.words) for g in res.groups] == [g.id == 1 for g in res.groups]
    with pytest.raises(InterpError, match="no feature group '42,43'"):
        res.group("42,43")
    # "2" is group id 2; "2," is the group whose only feature is 2
    assert res.group("2").id == 2
    assert res.group("2,").features == [2] and res.group(" 1 , ").features == [1]


def test_named_groups_only_are_cropped(parts, monkeypatch):
    from interp_falcon import steps

    target, cap, pool, ds = parts
    calls = []
    orig = steps.group_crops
    monkeypatch.setattr(steps, "group_crops", lambda *a, **k: calls.append(a[3]) or orig(*a, **k))
    f = Falcon(target, captioner=cap, pool=pool, low_min_similarity=0.0, max_images=4)
    res = f.explain(ds, which=["0,"])
    assert calls == [[0]]
    assert [g.features for g in res.groups if g.words] == [[0]]
    assert res.group("0,").score is not None


def test_outputs(explained, parts, tmp_path):
    from interp_falcon.output import write_run_dir

    f, res = explained
    ds = parts[3]
    files = write_run_dir(res, tmp_path, command="explain", features=f.features(ds), dataset=ds,
                          crops=f.cropped(res))
    rows = list(csv.DictReader(open(tmp_path / "concepts.csv", encoding="utf-8")))
    assert len(rows) == 3 and rows[0]["words"].split(":")[0] in toy.COLOURS
    data = json.loads((tmp_path / "falcon.json").read_text())
    assert data["groups"][0]["words"][0][0] == res.groups[0].words[0][0]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["method"] == "falcon" and run["sections"]
    for sec in run["sections"]:
        for fig in sec["figures"]:
            assert (tmp_path / fig).is_file() and (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "groups" / "g000" / "low_images.png").is_file()
    assert files["features"] == "features.safetensors"
    # a saved run can be read back and explained again
    again = load_groups(tmp_path, f)
    assert [g.features for g in again.groups] == [g.features for g in res.groups]


def test_results_hold_only_data_and_verify_the_grouping_rule(parts, explained, tmp_path):
    target, cap, pool, ds = parts
    f, res = explained
    fields = {fl.name for fl in __import__("dataclasses").fields(res)}
    assert set(vars(res)) == fields  # nothing hidden between find_groups and explain
    v = res.verification
    assert v.passed and v.value == 0.0 and "grouping rule" in v.name
    assert res.explained == [g.id for g in res.groups]
    # explain() returns a new result: the groups it was given stay unexplained
    groups = f.find_groups(ds)
    again = f.explain(groups)
    assert all(not g.words for g in groups.groups) and all(g.words for g in again.groups)
    # a group whose images break the rule is counted
    broken = __import__("copy").deepcopy(res)
    broken.groups[0].images = broken.groups[0].images + broken.groups[1].images[:2]
    from interp_falcon.explainer import rule_violations
    from interp_falcon.steps import normalize_rows

    frac = rule_violations(normalize_rows(f.features(ds)), broken.groups, res.threshold, "reference")
    n = sum(len(g.images) for g in broken.groups)
    assert frac == pytest.approx(2 / n)
    # save / load through the common Result folder format
    back = type(res).load(res.save(tmp_path / "saved"))
    assert back.to_dict() == res.to_dict() and back.groups[0].words == res.groups[0].words


@pytest.mark.parametrize("opts, message", [
    ({"sigma": "3"}, "option 'sigma' of method 'falcon' must be a number, got '3'"),
    ({"min_images": 2.5}, "option 'min_images' .* must be an integer"),
    ({"grouping": "kmeans"}, "must be one of 'reference', 'coactivation'"),
    ({"weights": "idf"}, "must be one of 'pool', 'topk', 'cosine'"),
    ({"score_include_self": 1}, "must be true or false"),
    ({"top_k": 0}, "'top_k' must be at least 1"),
    ({"box_threshold": 1.5}, r"'box_threshold' must be in \(0, 1\]"),
    ({"limit": 0}, "'limit' must be at least 1"),
])
def test_options_are_typed_and_checked_at_construction(parts, opts, message):
    target, cap, pool, _ = parts
    with pytest.raises(InterpError, match=message):
        Falcon(target, captioner=cap, pool=pool, **opts)


def test_captions_see_the_crop_view_the_captioner_advertises(parts, monkeypatch, tmp_path):
    from interp_falcon import steps

    target, cap, pool, ds = parts
    seen = []
    orig = steps.crop_views
    monkeypatch.setattr(steps, "crop_views", lambda *a, **k: seen.append(a[3]) or orig(*a, **k))
    res = Falcon(target, captioner=cap, pool=pool, low_min_similarity=0.0, max_images=5).explain(ds)
    assert res.settings["crop_view"] == "crop" and seen == []  # the reference's crops
    monkeypatch.setattr(cap, "defaults", {**(cap.defaults or {}), "crop_view": "in-place"})
    res = Falcon(target, captioner=cap, pool=pool, low_min_similarity=0.0, max_images=5).explain(ds)
    assert res.settings["crop_view"] == "in-place" and seen == ["in-place"] * len(res.groups)
    from interp_falcon.output import write_outputs

    write_outputs(res, tmp_path, command="explain", dataset=ds)
    assert (tmp_path / "groups" / "g000" / "captioned_views.png").is_file()
    for g in res.groups:  # the toy captioner still reads the colour of the box in place
        assert g.words[0][0] == list(toy.COLOURS)[g.features[0]]


@pytest.mark.parametrize("n", [3, 40])
def test_scores_figure_is_readable_at_any_group_count(tmp_path, n):
    """One bar per group: the figure's width stays that of a report column and its height
    grows with the groups (the old vertical bars made 40 groups a 1652 x 262 strip)."""
    from types import SimpleNamespace

    from PIL import Image

    from interp_falcon.explainer import GroupExplanation
    from interp_falcon.output import _scores_figure

    groups = [GroupExplanation(i, [i, i + 100], [0], [0], score=0.6 + 0.3 * i / n,
                               interpretable=0.6 + 0.3 * i / n > 0.8) for i in range(n)]
    path = tmp_path / "scores.png"
    _scores_figure(SimpleNamespace(groups=groups, settings={"score_threshold": 0.8}), path)
    w, h = Image.open(path).size
    assert 400 <= w <= 800
    assert h >= 20 * n and h <= 150 + 30 * n


def test_bad_options_fail_clearly(parts):
    target, cap, pool, _ = parts
    with pytest.raises(InterpError, match="unknown option 'sigmaa'.*sigma"):
        Falcon(target, captioner=cap, sigmaa=3)
    with pytest.raises(InterpError, match="unknown CAM method"):
        Falcon(target, captioner=cap, cam="nope")
    with pytest.raises(InterpError, match="'crop_view' .* must be one of 'crop', 'in-place' or None"):
        Falcon(target, captioner=cap, crop_view="zoom")
    with pytest.raises(InterpError, match="'low_rule' .* must be one of 'reference', 'contrast'"):
        Falcon(target, captioner=cap, low_rule="nope")
    with pytest.raises(interpcore.CapabilityError, match="feature_maps"):
        Falcon(cap, captioner=cap)
    with pytest.raises(interpcore.CapabilityError, match="image_encoder.*FALCON captioner"):
        Falcon(target, captioner=target).captioner


def test_registered_in_the_registry():
    assert "falcon" in interpcore.list_methods()["explainer"]
    entry = interpcore.get_registry().entry("explainer", "falcon")
    assert entry.requires == (interpcore.Capability.FEATURE_MAPS,)


def test_plugin_and_cli_module_do_not_import_torch():
    code = ("import sys, interp_falcon, interp_falcon.cli; "
            "print('torch' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# -- CLI, through an in-process plugin that provides the toy world by name -----------------------


class _ToyPlugin:
    @staticmethod
    @interpcore.hookimpl
    def register_backbones(register):
        models = {"cnn": toy.toy_target, "clip": toy.toy_captioner}
        register("toyf", lambda model, **kw: models[model](), list_models=lambda: list(models))

    @staticmethod
    @interpcore.hookimpl
    def register_datasets(register):
        register("toy-colours", lambda split="test", **kw: toy.ToyDataset(45))

    @staticmethod
    @interpcore.hookimpl
    def register_vocabularies(register):
        register("toy-captions", lambda size=None, **kw: interpcore.Vocabulary(
            "toy-captions", toy.toy_captions()))


@pytest.fixture
def cli(plugin_cli):
    invoke = plugin_cli(_ToyPlugin, "falcon-test-toy", "toyf")
    base = ["--backbone", "toyf:cnn", "--captioner", "toyf:clip", "--dataset", "toy-colours",
            "--max-images", "6"]
    return lambda *args: invoke("falcon", *args, *base)


def test_cli_find_groups_then_explain(cli, tmp_path):
    r = cli("find-groups", "--out", str(tmp_path / "g"))
    assert r.exit_code == 0, r.output
    assert "3 groups, 3 interpretable" in r.output
    assert (tmp_path / "g" / "features.safetensors").is_file()
    r = cli("explain", "--from", str(tmp_path / "g"), "--pool", "toy-captions", "--group", "2",
            "--out", str(tmp_path / "e"), "--report", str(tmp_path / "e" / "report.html"), "--json",
            "--crop-view", "in-place", "--low-rule", "reference")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert (data["settings"]["crop_view"], data["settings"]["low_rule"]) == ("in-place", "reference")
    explained = [g for g in data["groups"] if g["words"]]
    assert [g["id"] for g in explained] == [2]
    colour = list(toy.COLOURS)[explained[0]["features"][0]]
    assert explained[0]["words"][0][0] == colour
    assert (tmp_path / "e" / "report.html").is_file()


def test_cli_errors_are_one_line(cli, tmp_path):
    r = cli("explain", "--group", "99", "--pool", "toy-captions")
    assert r.exit_code == 1
    assert "no feature group '99'" in r.output and "Traceback" not in r.output
    r = cli("explain", "--pool", str(tmp_path / "nothing-here"))
    assert r.exit_code == 1 and "nothing-here" in r.output and "Traceback" not in r.output


def test_no_groups_is_not_an_error(parts):
    target, cap, pool, ds = parts
    res = Falcon(target, captioner=cap, pool=pool, sigma=50.0).explain(ds)
    assert res.groups == [] and res.pool is None and "0 groups" in str(res)


def test_coactivation_grouping_through_the_explainer(parts):
    target, cap, pool, ds = parts
    f = Falcon(target, captioner=cap, pool=pool, grouping="coactivation", max_images=4)
    res = f.find_groups(ds, score=False)
    assert sorted(g.features for g in res.groups) == [[0], [1], [2]]
    assert all(g.score is None for g in res.groups)
