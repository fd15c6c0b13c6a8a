"""Meta-tests: every hook is documented with its exact signature and exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from interpcore import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [
    name for name, fn in vars(hookspecs).items()
    if callable(fn) and hasattr(fn, "interpcore_spec")
]


def test_there_are_hooks():
    assert {"register_backbones", "register_vocabularies", "register_decomposers",
            "register_explainers", "register_datasets", "register_commands"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_documented_with_exact_signature(hook):
    doc = (ROOT / "docs" / "plugins.md").read_text()
    signature = f"{hook}{inspect.signature(getattr(hookspecs, hook))}"
    assert f"### `{signature}`" in doc, f"docs/plugins.md lacks a heading '### `{signature}`'"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_callback_signature_documented(hook):
    """The callback's call form in the hookspec docstring is the one in the docs."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    spec_doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    forms = re.findall(r"``(register\([^`]*\))``", spec_doc)
    for form in forms:
        assert f"`{form}`" in doc, f"docs/plugins.md does not show {form} for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    here = Path(__file__).resolve()
    tests = "".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.resolve() != here
    )
    assert re.search(rf"\b{hook}\b", tests), f"no test implements or calls {hook}"
