"""The registry and the plugin loader, with plugins registered in-process."""

from __future__ import annotations

import types

import pytest

from interpcore import (
    Backbone,
    Capability,
    CapabilityError,
    Dataset,
    Decomposer,
    Explainer,
    InterpError,
    PluginError,
    UnknownNameError,
    Vocabulary,
    hookimpl,
)
from interpcore.plugins import PluginManager
from interpcore.registry import Registry


class FakeBackbone(Backbone):
    def __init__(self, name, capabilities=(Capability.IMAGE_ENCODER,), **kw):
        self.name = name
        self.capabilities = frozenset(capabilities)
        self.kw = kw


def make_plugin(name="fakeplugin", **hooks):
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def backbone_plugin(prefix="lib", models=("alpha-1", "alpha-2", "beta"), caps=(Capability.IMAGE_ENCODER,)):
    def register_backbones(register):
        def loader(model, *, pretrained=None, device="auto", dtype=None, **options):
            return FakeBackbone(f"{prefix}:{model}", caps, pretrained=pretrained, model=model)

        register(prefix, loader, list_models=lambda: [(m, ["tag1"]) for m in models],
                 description="fake backbones")

    return make_plugin(f"plugin_{prefix}", register_backbones=register_backbones)


@pytest.fixture
def reg():
    return Registry(PluginManager(), load_entry_points=False).ensure_loaded()


def test_backbone_name_splits_at_first_colon_only(reg):
    reg.register_plugin(backbone_plugin("open_clip"))
    bb = reg.get_backbone("open_clip:hf-hub:org/repo", pretrained="x.pt")
    assert bb.kw["model"] == "hf-hub:org/repo"
    assert bb.kw["pretrained"] == "x.pt"


def test_list_backbones_with_wildcards_and_tags(reg):
    reg.register_plugin(backbone_plugin("lib"))
    names = [i.name for i in reg.list_backbones("lib:alpha*")]
    assert names == ["lib:alpha-1", "lib:alpha-2"]
    assert reg.list_backbones("lib:beta")[0].pretrained == ["tag1"]


def test_unknown_backbone_prefix_suggests_close_names(reg):
    reg.register_plugin(backbone_plugin("open_clip"))
    with pytest.raises(UnknownNameError) as info:
        reg.get_backbone("open_clp:ViT-B-32")
    msg = str(info.value)
    assert "open_clip:..." in msg and "interp backbones list" in msg


def test_unknown_model_error_offers_at_most_five_matches(reg):
    reg.register_plugin(backbone_plugin("lib", models=[f"alpha-{i}" for i in range(20)]))
    err = reg.unknown_model("lib", "alpha-")
    suggested = str(err).split("Did you mean: ")[1].split("?")[0].split(", ")
    assert 1 <= len(suggested) <= 5
    assert all(s.startswith("lib:alpha-") for s in suggested)


def test_name_without_colon_is_a_clear_error(reg):
    reg.register_plugin(backbone_plugin("lib"))
    with pytest.raises(UnknownNameError, match="library:model"):
        reg.get_backbone("alpha-1")


def test_plugin_raising_in_hook_is_isolated(reg, capsys):
    def bad(register):
        raise RuntimeError("boom in hook")

    reg.register_plugin(make_plugin("badplugin", register_vocabularies=bad), "badplugin")
    reg.register_plugin(backbone_plugin("lib"))
    assert reg.manager.statuses["badplugin"].status == "failed"
    assert "boom in hook" in reg.manager.statuses["badplugin"].error
    assert "badplugin" in capsys.readouterr().err
    assert reg.get_backbone("lib:beta").name == "lib:beta"


def test_misspelt_hook_is_recorded_with_suggestion(reg):
    status = reg.register_plugin(make_plugin("typo", register_backbone=lambda register: None), "typo")
    assert status.status == "failed"
    assert "register_backbone" in status.error and "register_backbones" in status.error


def test_failed_plugin_is_named_in_unknown_name_errors(reg):
    def bad(register):
        raise ImportError("no module named fancylib")

    reg.register_plugin(make_plugin("fancy", register_backbones=bad), "fancy")
    with pytest.raises(UnknownNameError) as info:
        reg.get_backbone("fancy:model")
    assert "fancy" in str(info.value) and "failed to load" in str(info.value)


def test_duplicate_names_are_reported_and_first_wins(reg, capsys):
    reg.register_plugin(backbone_plugin("lib", models=["one"]), "first")
    reg.register_plugin(backbone_plugin("lib", models=["two"]), "second")
    assert reg.entries["backbone"]["lib"].plugin == "first"
    assert any("registered by both" in w for w in reg.manager.statuses["second"].warnings)
    assert "registered by both" in capsys.readouterr().err


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("INTERP_STRICT_PLUGINS", "1")
    reg = Registry(PluginManager(), load_entry_points=False).ensure_loaded()

    def bad(register):
        raise RuntimeError("strict boom")

    with pytest.raises(PluginError, match="strict boom"):
        reg.register_plugin(make_plugin("strictbad", register_datasets=bad), "strictbad")


class NeedsStream(Explainer):
    name = "needs-stream"
    requires = (Capability.VIT_RESIDUAL_STREAM,)


def test_method_on_backbone_without_capability_names_both(reg):
    def register_explainers(register):
        register("needs-stream", NeedsStream, requires=NeedsStream.requires)

    reg.register_plugin(make_plugin("m", register_explainers=register_explainers))
    reg.register_plugin(backbone_plugin("lib"))
    with pytest.raises(CapabilityError) as info:
        reg.get_explainer("needs-stream", "lib:beta")
    assert "lib:beta" in str(info.value) and "vit_residual_stream" in str(info.value)
    assert "needs-stream" in str(info.value)
    # the class checks too, when built directly
    with pytest.raises(CapabilityError):
        NeedsStream(FakeBackbone("lib:x"))


class _Dec(Decomposer):
    name = "dec"

    def __init__(self, backbone, **options):  # no backbone check: the test passes None
        self.backbone, self.options = backbone, options


class _Toy(Dataset):
    def __init__(self, split, **options):
        self.split, self.options = split, options

    def __len__(self):
        return 0


def test_decomposer_asked_as_explainer_says_so(reg):
    reg.register_plugin(make_plugin(
        "d", register_decomposers=lambda register: register("dec", _Dec)))
    dec = reg.get_decomposer("dec", None, k=1)
    assert isinstance(dec, _Dec) and dec.options == {"k": 1}
    with pytest.raises(InterpError, match="is a decomposer, not an explainer: use get_decomposer"):
        reg.get_explainer("dec")


def test_vocabulary_and_dataset_lookup(reg):
    def register_vocabularies(register):
        register("words", lambda size=None, **o: Vocabulary("words", ["a", "b", "c"][-size:] if size else ["a", "b", "c"]))

    def register_datasets(register):
        register("toy", lambda split="test", **o: _Toy(split, **o))

    reg.register_plugin(make_plugin("v", register_vocabularies=register_vocabularies,
                                    register_datasets=register_datasets))
    assert reg.get_vocabulary("words", size=2).concepts == ["b", "c"]
    ds = reg.get_dataset("toy", split="train", n=3)
    assert (ds.split, ds.options) == ("train", {"n": 3})
    with pytest.raises(UnknownNameError, match="interp datasets list"):
        reg.get_dataset("toyy")
    assert reg.names("vocabulary", "w*") == ["words"]


def test_hook_accepting_fewer_arguments_than_the_spec(reg):
    calls = []

    def register_commands():  # takes no 'cli' argument: still called
        calls.append(1)

    reg.register_plugin(make_plugin("few", register_commands=register_commands))
    reg.manager.call_each("register_commands", lambda name: {"cli": None})
    assert calls == [1]
