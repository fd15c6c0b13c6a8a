"""interpcore.lazy.attach: the one lazy-export helper of the core and the built-in plugins."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A throw-away package whose submodule records that it was imported."""
    root = tmp_path / "lazypkg_t"
    root.mkdir()
    (root / "__init__.py").write_text(textwrap.dedent("""
        import interpcore.lazy
        def here():
            return "eager"
        __getattr__, __dir__, __all__ = interpcore.lazy.attach(
            __name__, {"heavy": ["Thing", "ALIAS"]}, aliases={"ALIAS": "Thing"}, eager=["here"])
    """))
    (root / "heavy.py").write_text("import sys\nsys.modules[__name__.rsplit('.', 1)[0]].loaded = True\n"
                                   "class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("lazypkg_t")
    for name in ("lazypkg_t", "lazypkg_t.heavy"):
        sys.modules.pop(name, None)


def test_names_resolve_on_first_use_only(pkg):
    assert "lazypkg_t.heavy" not in sys.modules
    assert pkg.__all__ == ["ALIAS", "Thing", "here"]
    assert {"Thing", "ALIAS", "here"} <= set(dir(pkg))
    assert "lazypkg_t.heavy" not in sys.modules  # listing names imports nothing
    thing = pkg.Thing
    assert pkg.loaded and thing is sys.modules["lazypkg_t.heavy"].Thing
    assert pkg.ALIAS is thing  # an alias names the same object
    assert "Thing" in vars(pkg)  # kept: the next lookup is a plain attribute read
    from lazypkg_t import Thing

    assert Thing is thing


def test_unknown_name_is_an_attribute_error(pkg):
    with pytest.raises(AttributeError, match="module 'lazypkg_t' has no attribute 'Nope'"):
        pkg.Nope
    assert "lazypkg_t.heavy" not in sys.modules


@pytest.mark.parametrize("module, name, submodule", [
    ("interpcore", "concept_dictionary", "interpcore.concepts"),
    ("interp_splice", "SPLICE", "interp_splice.model"),
    ("interp_open_clip", "load_open_clip", "interp_open_clip.backbone"),
    ("interp_timm", "load_timm", "interp_timm.backbone"),
    ("interp_hf_clip", "load_hf_clip", "interp_hf_clip.backbone"),
])
def test_the_packages_import_no_torch_until_a_lazy_name_is_used(module, name, submodule):
    code = (f"import sys, {module}\n"
            "assert 'torch' not in sys.modules, 'torch at import'\n"
            f"assert {name!r} in dir({module}) and {name!r} in {module}.__all__\n"
            f"value = getattr({module}, {name!r})\n"
            f"assert {submodule!r} in sys.modules and value is not None\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
