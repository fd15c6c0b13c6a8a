"""Plugins installed the way a user installs them (pip), found through real entry points.

The packages are pip-installed into a temporary ``--target`` folder that only the
subprocesses of these tests see (through PYTHONPATH), so the broken plugin cannot disturb
the rest of the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "tests" / "plugin_packages"
EXAMPLE = ROOT / "examples" / "interp_example_plugin"


def pip_install_target(target: Path, *packages: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
           "--no-build-isolation", "--target", str(target), *map(str, packages)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    pip_install_target(target, PACKAGES / "good", PACKAGES / "broken", EXAMPLE)
    return target


def interp(site, *args, env=None, check_torch=False):
    """Run the interp CLI in a subprocess that sees the test plugins."""
    e = dict(os.environ)
    for var in ("INTERP_NO_PLUGINS", "INTERP_PLUGINS", "INTERP_DISABLE_PLUGINS", "INTERP_STRICT_PLUGINS"):
        e.pop(var, None)
    e["PYTHONPATH"] = str(site) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    code = (
        "import sys\n"
        "from interpcore import cli\n"
        "try:\n"
        f"    cli.main({list(args)!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code or 0\n"
        "else:\n"
        "    code = 0\n"
        + ("print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr)\n" if check_torch else "")
        + "sys.exit(code if isinstance(code, int) else 1)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_plugins_shows_good_and_broken(site):
    r = interp(site, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    good, broken = rows["goodplugin"], rows["brokenplugin"]
    assert good["status"] == "ok"
    assert good["distribution"] == "interp-goodplugin" and good["version"] == "1.2.3"
    assert good["hooks"] == ["register_commands", "register_vocabularies"]
    assert broken["status"] == "failed"
    assert "ModuleNotFoundError" in broken["error"] and "interp_this_module_does_not_exist" in broken["error"]
    assert rows["example"]["status"] == "ok"


def test_list_commands_work_with_broken_plugin_installed(site):
    r = interp(site, "vocabularies", "list")
    assert r.returncode == 0, r.stderr
    assert "good-words" in r.stdout
    broken_lines = [line for line in r.stderr.splitlines() if "brokenplugin" in line]
    assert len(broken_lines) == 1, r.stderr
    r = interp(site, "good-hello")
    assert r.returncode == 0 and "hello from goodplugin" in r.stdout


def test_name_of_failed_plugin_is_mentioned(site):
    r = interp(site, "--debug", "backbones", "list", "broken:*")
    assert "no backbone matches" in r.stderr
    code = ("import interpcore\n"
            "try:\n    interpcore.get_backbone('broken:model')\n"
            "except interpcore.UnknownNameError as e:\n    print(e)\n")
    e = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e).stdout
    assert "brokenplugin" in out and "failed to load" in out


def test_strict_mode_exits_nonzero_naming_the_plugin(site):
    r = interp(site, "vocabularies", "list", env={"INTERP_STRICT_PLUGINS": "1"})
    assert r.returncode != 0
    assert "brokenplugin" in r.stderr
    assert "Traceback" not in r.stderr


def test_environment_switches(site):
    r = interp(site, "plugins", "--json", env={"INTERP_NO_PLUGINS": "1"})
    assert json.loads(r.stdout) == []
    r = interp(site, "plugins", "--json", env={"INTERP_PLUGINS": "goodplugin"})
    rows = {p["name"]: p["status"] for p in json.loads(r.stdout)}
    assert rows["goodplugin"] == "ok"
    assert {s for n, s in rows.items() if n != "goodplugin"} == {"disabled"}
    r = interp(site, "plugins", "--json", env={"INTERP_DISABLE_PLUGINS": "brokenplugin"})
    rows = {p["name"]: p["status"] for p in json.loads(r.stdout)}
    assert rows["brokenplugin"] == "disabled" and rows["goodplugin"] == "ok"
    assert "brokenplugin" not in r.stderr


@pytest.mark.parametrize("args", [
    ("--help",), ("plugins",), ("backbones", "list"), ("vocabularies", "list"),
    ("methods", "list"), ("datasets", "list"),
])
def test_startup_commands_do_not_import_torch(site, args):
    r = interp(site, *args, check_torch=True)
    assert r.returncode == 0, r.stderr
    assert "NO_TORCH" in r.stderr, f"interp {' '.join(args)} imported torch"


def test_example_plugin_adds_backbone_and_explainer(site):
    r = interp(site, "backbones", "list", "colorhist:*")
    assert r.stdout.split() == ["colorhist:rgb-4", "colorhist:rgb-8"]
    r = interp(site, "methods", "list", "occlusion")
    assert "occlusion" in r.stdout and "explainer" in r.stdout
    code = (
        "import interpcore\n"
        "from PIL import Image\n"
        "img = Image.new('RGB', (32, 32), (0, 0, 255))\n"
        "img.paste((255, 0, 0), (0, 0, 8, 8))\n"
        "bb = interpcore.get_backbone('colorhist:rgb-8', device='cpu')\n"
        "ex = interpcore.get_explainer('occlusion', bb, grid=4)\n"
        "r = ex.explain(img)\n"
        "flat = [v for row in r.heatmap for v in row]\n"
        "print(flat.index(max(flat)), bb.embed_dim)\n"
    )
    e = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e)
    assert out.returncode == 0, out.stderr
    # the red patch sits in the top-left cell: occluding it changes the histogram most
    assert out.stdout.split() == ["0", "512"]


def test_example_plugin_vit_has_a_residual_stream_that_prs_and_textspan_use(site, tmp_path):
    """The example's tiny ViT, written from docs/plugins.md only, meets the contract and the
    built-in PRS and TextSpan run on it through the registry (and the CLI)."""
    code = (
        "import interpcore, json\n"
        "from interpcore.testing import check_backbone\n"
        "bb = interpcore.get_backbone('toyvit:tiny', device='cpu')\n"
        "report = check_backbone(bb)\n"
        "parts = interpcore.get_decomposer('prs', bb).decompose(['examples/red_circle.png'])\n"
        "print(json.dumps({'checks': len(report.passed), 'error': float(parts.max_relative_error())}))\n"
    )
    e = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["checks"] == 10 and got["error"] < 1e-5, got
    r = interp(site, "textspan", "run", "-b", "toyvit:tiny", "-d", "shapes", "-n", "48",
               "--layers", "1", "--texts-per-head", "3", "--rank", "8", "--pool", "shapes",
               "--out", str(tmp_path / "ts"))
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.strip().startswith("L1.H")]
    assert len(rows) == 4 and all(line.count("|") == 2 for line in rows), r.stdout  # 4 heads, 3 texts
