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
