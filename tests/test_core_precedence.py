"""Name clashes between plugins resolve by one documented rule (docs/plugins.md), the same
from the CLI and the Python API in any working directory; a failed plugin keeps nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest

from interpcore import Backbone, InterpError, PluginError, Vocabulary, hookimpl, plugins
from interpcore.plugins import PluginManager
from interpcore.registry import Registry
from test_core_installed_plugins import PACKAGES, pip_install_target

ROOT = Path(__file__).resolve().parents[1]


def _plugin(name, **hooks):
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


@pytest.fixture
def reg():
    return Registry(PluginManager(), load_entry_points=False).ensure_loaded()


class _BB(Backbone):
    def __init__(self, name):
        self.name = name


def test_first_loaded_keeps_a_clashing_name_and_both_are_told(reg, capsys):
    for who in ("first", "second"):
        reg.register_plugin(_plugin(who, register_vocabularies=lambda register, w=who: register(
            "words", lambda size=None, w=w, **o: Vocabulary("words", [w]))), who)
    assert reg.get_vocabulary("words").concepts == ["first"]
    assert reg.clashes() == [{"kind": "vocabulary", "name": "words", "kept_by": "first",
                              "ignored": ["second"]}]
    for who in ("first", "second"):
        assert any("registered by both 'first' and 'second'" in w
                   for w in reg.manager.statuses[who].warnings)
    assert "using 'first'" in capsys.readouterr().err


def test_a_plugin_that_fails_in_a_later_hook_keeps_none_of_its_names(reg):
    def boom(register):
        raise RuntimeError("boom in datasets")

    reg.register_plugin(_plugin(
        "half", register_backbones=lambda register: register("half", lambda m, **o: _BB("half:" + m)),
        register_vocabularies=lambda register: register("shared", lambda size=None, **o: Vocabulary("shared", ["half"])),
        register_datasets=boom), "half")
    assert reg.manager.statuses["half"].status == "failed"
    assert "half" not in reg.entries["backbone"] and "shared" not in reg.entries["vocabulary"]
    with pytest.raises(InterpError, match="failed to load"):
        reg.get_backbone("half:x")


def test_when_the_winner_of_a_clash_fails_the_next_plugin_takes_the_name():
    manager = PluginManager()

    def winner_vocab(register):
        register("shared", lambda size=None, **o: Vocabulary("shared", ["winner"]))

    def winner_boom(register):
        raise RuntimeError("late failure")

    manager.register(_plugin("winner", register_vocabularies=winner_vocab,
                             register_datasets=winner_boom), "winner")
    manager.register(_plugin("runner_up", register_vocabularies=lambda register: register(
        "shared", lambda size=None, **o: Vocabulary("shared", ["runner-up"]))), "runner_up")
    reg = Registry(manager, load_entry_points=False).ensure_loaded()
    assert reg.get_vocabulary("shared").concepts == ["runner-up"]


def test_a_loader_returning_the_wrong_type_is_named(reg):
    reg.register_plugin(_plugin("sloppy", register_backbones=lambda register: register(
        "sloppy", lambda model, **o: "not a backbone")), "sloppy")
    with pytest.raises(PluginError, match=r"backbone loader for 'sloppy' \(plugin 'sloppy'\) "
                                          r"returned str, not an interpcore.Backbone"):
        reg.get_backbone("sloppy:x")


def test_entry_points_load_core_first_then_third_parties_sorted(monkeypatch):
    class Dist:
        def __init__(self, name):
            self.metadata, self.version = {"Name": name}, "1"

    class EP:
        def __init__(self, name, dist):
            self.name, self.value, self.dist = name, f"mod_{name}", Dist(dist)

    found = [EP("zz", "zeta-plugin"), EP("splice", "interpcore"), EP("b", "alpha_plugin"),
             EP("a", "alpha_plugin"), EP("prs", "interpcore")]
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: list(found))
    order = [ep.name for ep, _, _ in plugins._ordered_entry_points()]
    assert order == ["splice", "prs", "a", "b", "zz"]
    found.reverse()  # another sys.path order: third parties come out the same
    assert [ep.name for ep, _, _ in plugins._ordered_entry_points()][2:] == ["a", "b", "zz"]


def test_hooks_are_called_in_load_order():
    manager = PluginManager()
    seen = []
    for name in ("one", "two", "three"):
        manager.register(_plugin(name, register_commands=lambda cli, n=name: seen.append(n)), name)
    manager.call_each("register_commands", lambda name: {"cli": None})
    assert seen == ["one", "two", "three"]


# -- installed the way a user installs ------------------------------------------------------


@pytest.fixture(scope="module")
def clash_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("clash-site")
    pip_install_target(target, PACKAGES / "clash")
    return target


def _run(site, code, cwd):
    env = dict(os.environ)
    for var in ("INTERP_NO_PLUGINS", "INTERP_PLUGINS", "INTERP_DISABLE_PLUGINS", "INTERP_STRICT_PLUGINS"):
        env.pop(var, None)
    env["PYTHONPATH"] = str(site) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=180)


API = ("import interpcore, json\n"
       "reg = interpcore.get_registry()\n"
       "print(json.dumps({'laion': reg.entries['vocabulary']['laion'].plugin,\n"
       "                  'timm': reg.entries['backbone']['timm'].plugin,\n"
       "                  'mine': interpcore.get_vocabulary('clash-words').concepts}))\n")
CLI = ("import sys\nfrom interpcore import cli\n"
       "try:\n    cli.main(sys.argv[1:] or ['plugins'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n")


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_builtins_keep_their_names_from_api_and_cli_in_any_directory(clash_site, tmp_path, where):
    cwd = ROOT if where == "repo" else tmp_path
    api = _run(clash_site, API, cwd)
    assert api.returncode == 0, api.stderr
    got = json.loads(api.stdout.strip().splitlines()[-1])
    assert got == {"laion": "text_vocab", "timm": "timm", "mine": ["one", "two"]}
    cli = _run(clash_site, CLI, cwd)
    assert cli.returncode == 0, cli.stderr
    assert "CLASH PLUGINS COMMAND" not in cli.stdout  # the core's `plugins` command ran
    assert "name clashes" in cli.stdout
    assert "vocabulary 'laion': kept by text_vocab, ignored from clashplugin" in cli.stdout
    assert "backbone 'timm': kept by timm, ignored from clashplugin" in cli.stdout
    assert "command 'plugins' belongs to 'interpcore'" in cli.stderr
    hello = _run(clash_site, CLI.replace("['plugins']", "['clash-hello']"), cwd)
    assert hello.returncode == 0 and "hello from clash" in hello.stdout, hello.stderr


def test_disabling_the_builtin_lets_the_third_party_take_the_name(clash_site, tmp_path):
    env_code = "import os\nos.environ['INTERP_DISABLE_PLUGINS'] = 'text_vocab'\n" + API.replace(
        "'timm': reg.entries['backbone']['timm'].plugin,\n", "")
    r = _run(clash_site, env_code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["laion"] == "clashplugin"


def test_a_plugin_failing_in_register_commands_keeps_none_of_them():
    from interpcore import cli as icli

    group = click.Group()
    group.add_command(click.Command("core-cmd"))

    def half(cli):
        cli.add_command(click.Command("half-cmd"))
        raise RuntimeError("boom after one command")

    manager = PluginManager()
    manager.register(_plugin("halfcmd", register_commands=half), "halfcmd")
    reg = Registry(manager, load_entry_points=False).ensure_loaded()
    saved = (icli.cli, icli._commands_added, icli._registry)
    try:
        icli.cli, icli._commands_added, icli._registry = group, False, lambda: reg
        icli._add_plugin_commands()
    finally:
        icli.cli, icli._commands_added, icli._registry = saved
    assert sorted(group.commands) == ["core-cmd"]
    assert manager.statuses["halfcmd"].status == "failed"
