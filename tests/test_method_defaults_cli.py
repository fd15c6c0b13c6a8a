"""The method plugins read their defaults from what backbones and datasets advertise, and
their commands share the core's CLI plumbing (interpcore.commands): ``-q`` after the
subcommand, ``--out`` checked before any model is loaded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import interpcore

# every method command that writes a run folder, with the arguments it needs to start
METHOD_COMMANDS = [
    ["splice", "decompose", "IMG"],
    ["splice", "classes"],
    ["splice", "dataset"],
    ["prs", "decompose"],
    ["prs", "ablate"],
    ["prs", "heatmap", "IMG"],
    ["prs", "segment"],
    ["prs", "spurious", "--heads", "0.0"],
    ["prs", "search", "--heads", "0.0"],
    ["textspan", "run"],
    ["falcon", "find-groups"],
    ["falcon", "explain"],
]


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """``interp ARGS`` in-process, with backbone construction forbidden: a command that
    reaches a model raises AssertionError instead of loading it."""
    from interpcore import cli as icli
    from interpcore.registry import Registry

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))

    def no_model(self, name, *a, **k):
        raise AssertionError(f"backbone {name} was loaded")

    monkeypatch.setattr(Registry, "get_backbone", no_model)
    icli._add_plugin_commands()
    runner = CliRunner()
    return lambda *args: runner.invoke(icli.cli, list(args))


@pytest.mark.parametrize("cmd", METHOD_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_out_under_a_file_fails_before_any_model_is_loaded(cli, tmp_path, cmd):
    img = tmp_path / "x.png"
    img.write_bytes(b"not read")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    args = [str(img) if a == "IMG" else a for a in cmd]
    quiet = "--quiet" if cmd[:2] == ["prs", "search"] else "-q"  # search: -q is --query
    r = cli(*args, quiet, "--out", str(blocker / "run"))  # -q after the subcommand
    assert r.exit_code == 1, r.output
    assert "is a file, not a folder" in r.output and "was loaded" not in r.output
    assert "No such option" not in r.output
    assert not (blocker.parent / "run").exists()


@pytest.mark.parametrize("cmd", METHOD_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_report_must_be_html_everywhere(cli, tmp_path, cmd):
    img = tmp_path / "x.png"
    img.write_bytes(b"not read")
    args = [str(img) if a == "IMG" else a for a in cmd]
    r = cli(*args, "--report", str(tmp_path / "r.txt"))
    assert r.exit_code == 1 and "give a path ending in .html" in r.output, r.output


# -- defaults advertised by a backbone family and by datasets ---------------------------

ADVERTISED = {"vocabulary": "toy-words", "image_mean": "toy-colours", "dataset": "toy-colours",
              "text_pool": "toy-words", "caption_pool": "toy-words", "captioner": "toy:clip"}


class _AdvertPlugin:
    """A family that only wraps the toy CLIP (through the registry) and advertises defaults."""

    @staticmethod
    @interpcore.hookimpl
    def register_backbones(register):
        def load(model, **kw):
            return interpcore.get_backbone("toy:clip", **kw)

        register("advert", load, list_models=lambda: ["clip"], defaults=ADVERTISED,
                 description="toy CLIP advertising defaults (tests)")


@pytest.fixture
def registry(toy_registry):
    toy_registry.register_plugin(_AdvertPlugin, "advert-test")
    return toy_registry


def test_the_registry_fills_family_defaults(registry):
    bb = interpcore.get_backbone("advert:clip")
    assert bb.defaults == ADVERTISED
    assert interpcore.get_backbone("toy:clip").defaults == {}


def test_splice_uses_the_advertised_vocabulary_and_image_mean(registry):
    import torch

    from interpcore.concepts import image_mean

    bb = interpcore.get_backbone("advert:clip")
    dec = interpcore.get_decomposer("splice", bb)
    assert dec.vocabulary.name == "toy-words"
    expected = image_mean(bb, "toy-colours", split="train", limit=2000)
    assert torch.allclose(dec.model.image_mean.cpu(), torch.as_tensor(expected).float().cpu())
    # an explicit option wins
    assert interpcore.get_decomposer("splice", bb, vocabulary=["red", "blue", "dog"]).vocabulary.name != "toy-words"
    # without advertised defaults there is no mean to guess
    with pytest.raises(interpcore.InterpError, match="no image mean is known"):
        interpcore.get_decomposer("splice", interpcore.get_backbone("toy:clip"), vocabulary="toy-words")


def test_splice_command_uses_the_advertised_dataset(registry):
    from interpcore.cli import _add_plugin_commands, cli

    _add_plugin_commands()
    r = CliRunner().invoke(cli, ["splice", "dataset", "-b", "advert:clip", "-n", "12", "--json", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["dataset"] == "toy-colours" and data["vocabulary"] == "toy-words"


class _Tagged(interpcore.Dataset):
    name = "tagged"
    classes = ["a", "b"]
    defaults = {"text_pool": "dataset-pool", "zeroshot_task": "label", "caption_pool": "dataset-captions"}


def test_textspan_pool_dataset_wins_over_backbone_then_fallback():
    from interp_prs.textspan import default_pool

    bb = type("B", (), {"defaults": {"text_pool": "backbone-pool"}})()
    assert default_pool(_Tagged(), bb) == "dataset-pool"
    assert default_pool(None, bb) == "backbone-pool"
    assert default_pool(interpcore.Dataset(), None) == "image_descriptions_general"


def test_zero_shot_tasks_come_from_the_dataset(registry):
    from interp_prs.tasks import default_task, get_task, store_dataset

    # a store of a registered dataset gets the dataset back; an unknown one its classes
    ds = store_dataset({"dataset_name": "toy-colours", "classes": ["x"]})
    assert type(ds).__name__ == "ToyColours"
    rec = store_dataset({"dataset_name": "gone", "classes": ["cat", "dog"]})
    assert rec.name == "gone" and get_task({"dataset_name": "gone", "classes": ["cat", "dog"]}).classes == ["cat", "dog"]
    with pytest.raises(interpcore.InterpError, match="no zero-shot task 'shape' on dataset 'gone'"):
        get_task({"dataset_name": "gone", "classes": ["cat"]}, "shape")

    class Attrs(interpcore.Dataset):
        name, classes, defaults = "attrs", ["a"], {"zeroshot_task": "size"}

        def zeroshot_tasks(self, templates=None):
            from interpcore.zeroshot import ZeroShotTask

            return {**super().zeroshot_tasks(templates),
                    "size": ZeroShotTask("size", ["s", "l"], ["small", "large"], ["a {}"], "size")}

    assert default_task(Attrs()) == "size"
    assert default_task(_Tagged()) == "label"
    assert default_task(interpcore.Dataset(), allow_none=True) is False


def test_falcon_reads_captioner_pool_and_dataset_from_the_backbone():
    pytest.importorskip("pytorch_grad_cam")

    class Target(interpcore.Backbone):
        name = "fake:cnn"
        capabilities = frozenset({interpcore.Capability.FEATURE_MAPS})
        defaults = {"captioner": "fake:clip", "caption_pool": "backbone-captions",
                    "dataset": "probe-data"}

    from interp_falcon.explainer import Falcon

    f = Falcon(Target())
    assert f.options["captioner"] == "fake:clip" and f.options["pool"] == "backbone-captions"
    f._datasets["probe-data"] = probe = _Tagged()
    assert f._dataset(None) is probe
    f._use_dataset_pool(probe)  # the dataset's caption pool wins over the backbone's
    assert f.options["pool"] == "dataset-captions"
    named = Falcon(Target(), pool="mine", captioner="other:clip")
    named._use_dataset_pool(probe)  # ... but never over the user's
    assert named.options["pool"] == "mine" and named.options["captioner"] == "other:clip"
