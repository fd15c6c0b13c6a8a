"""Both neuron methods of issue 20 on a third-party backbone: the example plugin's
``toyvit:tiny`` (examples/interp_example_plugin, written from docs/plugins.md), pip-installed
into a temporary folder, run from the command line and the Python API in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "interp_example_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True, text=True)
    return target


def _run(site, code, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               INTERP_QUIET="1")
    for var in ("INTERP_NO_PLUGINS", "INTERP_PLUGINS", "INTERP_DISABLE_PLUGINS"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


CLI = "import sys\nfrom interpcore import cli\ncli.main(sys.argv[1:])\n"


@pytest.mark.slow
def test_dissect_and_neurons_commands_on_toyvit(site, tmp_path):
    out = _run(site, CLI, "dissect", "-b", "toyvit:tiny", "--layer", "blocks.1.mlp.1", "-d", "shapes",
               "--limit", "48", "-V", "shapes", "--similarity", "rank_reorder", "--json", "-q")
    data = json.loads(out)
    assert data["backbone"] == "toyvit:tiny" and data["clip"] == "toyvit:tiny"
    assert len(data["labels"]) == 128 and data["n_images"] == 48  # 4 x width 32 MLP neurons
    out = _run(site, CLI, "neurons", "explain", "-b", "toyvit:tiny", "-d", "shapes", "--limit", "32",
               "-V", "shapes-attributes", "--out", str(tmp_path / "n"), "--json", "-q")
    data = json.loads(out)
    assert data["layers"] == [0] and len(data["texts"][0]) == 128 and data["mlp_split_error"] < 1e-5
    out = _run(site, CLI, "neurons", "find", "a red circle", "-b", "toyvit:tiny", "--from",
               str(tmp_path / "n" / "result"), "-k", "2", "--json", "-q")
    assert len(json.loads(out)) == 2


@pytest.mark.slow
def test_python_api_on_toyvit(site):
    code = (
        "import json, interpcore\n"
        "from interpcore.testing import check_method\n"
        "bb = interpcore.get_backbone('toyvit:tiny', device='cpu')\n"
        "ds = interpcore.get_dataset('shapes', n=16)\n"
        "images = [ds[i]['image'] for i in range(16)]\n"
        "d = interpcore.get_explainer('dissect', bb, layer='blocks.0.mlp.1', vocabulary=['red', 'blue', 'star'])\n"
        "check_method(d, images)\n"
        "lens = interpcore.get_explainer('neurons', bb, vocabulary=['red', 'blue', 'star'])\n"
        "check_method(lens, images)\n"
        "r = lens.explain(images)\n"
        "ab = lens.ablate(r, r.top(5), ds)\n"
        "print(json.dumps({'labels': len(d.explain(images).labels), 'ok': r.verification.passed,\n"
        "                  'tasks': sorted(ab.before)}))\n"
    )
    got = json.loads(_run(site, code).strip().splitlines()[-1])
    assert got["labels"] == 128 and got["ok"] and {"color", "shape"} <= set(got["tasks"])
