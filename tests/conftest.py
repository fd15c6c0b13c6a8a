"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture
def offline(monkeypatch):
    """Never touch the network: weight lookups must fail fast with the offline message."""
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def plugin_cli(monkeypatch, tmp_path):
    """Factory: ``plugin_cli(plugin, plugin_name, backbone_prefix)`` registers a test plugin
    (once per process), adds its commands to the CLI and returns ``invoke(*args)``, which runs
    ``interp -q ARGS`` in-process with a private cache folder."""
    from click.testing import CliRunner

    from interpcore import cli as icli
    from interpcore.registry import get_registry

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))

    def make(plugin, plugin_name, backbone_prefix):
        reg = get_registry()
        if backbone_prefix not in reg.entries["backbone"]:
            reg.register_plugin(plugin, plugin_name)
        icli._add_plugin_commands()
        runner = CliRunner()
        return lambda *args: runner.invoke(icli.cli, ["-q", *args])

    return make


@pytest.fixture
def toy_registry(tmp_path, monkeypatch):
    """A fresh process-wide registry with the SpLiCE toy plugin and an empty cache, restored
    afterwards. Register more plugins on the returned registry as a test needs them."""
    import interpcore.registry as R
    from splice_toy import ToyPlugin

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    old = R._registry
    reg = R.Registry()
    R.reset_registry(reg)
    reg.register_plugin(ToyPlugin(), "splice-toy")
    yield reg
    R.reset_registry(old)
