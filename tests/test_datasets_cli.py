"""``interp datasets show``: describes a dataset on disk, errors in one line."""

from __future__ import annotations

import json
import subprocess
import sys

from test_datasets import _waterbirds


def _interp(*args):
    return subprocess.run([sys.executable, "-c", "from interpcore.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_show_waterbirds_counts_groups(tmp_path):
    _waterbirds(tmp_path)
    proc = _interp("datasets", "show", "waterbirds", "--root", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["size"] == 3 and info["classes"] == 2
    assert info["groups"] == {"1": 1, "2": 1, "3": 1}
    assert info["samples"][0]["class"] == "waterbird"


def test_show_passes_options(tmp_path):
    _waterbirds(tmp_path)
    proc = _interp("datasets", "show", "imagefolder", "--root", tmp_path, "-O", "limit=1")
    assert proc.returncode == 0, proc.stderr
    assert "1 samples" in proc.stdout


def test_show_missing_root_is_one_line(tmp_path):
    proc = _interp("datasets", "show", "waterbirds", "--root", tmp_path / "nope")
    assert proc.returncode == 1
    assert "waterbird_complete95_forest2water2" in proc.stderr and "Traceback" not in proc.stderr
