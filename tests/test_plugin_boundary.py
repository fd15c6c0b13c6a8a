"""Built-in plugins know each other only through the registry (issue 14, deliverable 3).

No built-in plugin package (backbones/interp_*, plugins/interp_*, vocabularies/interp_*)
imports another one, at module level or inside a function; a third-party plugin could not
either. Using the shapes models loads neither package from the other.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*(?:from|import)\s+(interp_\w+)", re.M)



def _packages():
    return sorted(p for pattern in ("backbones/interp_*", "plugins/interp_*", "vocabularies/interp_*")
                  for p in REPO.glob(pattern) if p.is_dir())


def test_no_built_in_plugin_imports_another():
    packages = _packages()
    names = {p.name for p in packages}
    assert {"interp_shapes", "interp_shapes_models", "interp_prs", "interp_open_clip"} <= names
    found = set()
    for pkg in packages:
        for f in pkg.rglob("*.py"):
            for other in IMPORT.findall(f.read_text(encoding="utf-8")):
                if other != pkg.name and other in names:
                    found.add((str(f.relative_to(REPO)), other))
    assert not found, sorted(found)


@pytest.mark.parametrize("first", ["interp_shapes_models", "interp_shapes"])
def test_shapes_packages_load_without_each_other(first):
    """Loading both shapes models and training-side modules imports no other plugin package
    from either shapes package (they meet only in the registry)."""
    pytest.importorskip("torch")
    other = {"interp_shapes_models": "interp_shapes", "interp_shapes": "interp_shapes_models"}[first]
    mods = {"interp_shapes_models": "import interp_shapes_models.loading, interp_shapes_models.models",
            "interp_shapes": "import interp_shapes.train, interp_shapes.evaluate, interp_shapes.groundtruth, "
                             "interp_shapes.quality, interp_shapes.cli"}[first]
    code = f"import sys; {mods}; print(sorted(m for m in sys.modules if m.split('.')[0] == {other!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
