"""What open_clip offers, read from its installed files WITHOUT importing open_clip or torch.

``interp backbones list`` must stay fast and torch-free, but ``import open_clip`` imports
torch. So this module locates the installed package with :func:`importlib.util.find_spec`
(which does not execute it), reads the architecture names from ``model_configs/*.json`` and
the pretrained-weight table from ``pretrained.py`` by parsing it with :mod:`ast`.

The parser understands the shapes that file has had for years (module-level
``_NAME = dict(tag=_pcfg(...), ...)`` tables, a ``_PRETRAINED = {"model": _NAME or
dict(...)}`` literal, and the derived ``<model>-quickgelu`` entries for tags marked
``quick_gelu=True``). If a future open_clip changes that file beyond recognition, listing
falls back to architecture names without tags instead of failing.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import re
from pathlib import Path

#: OpenAI CLIP names (as the ``clip`` package and SpLiCE spell them) -> open_clip names.
OPENAI_NAMES = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
    "ViT-L/14": "ViT-L-14",
    "ViT-L/14@336px": "ViT-L-14-336",
}


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())]


@functools.lru_cache(maxsize=1)
def open_clip_dir() -> Path | None:
    """The installed open_clip package folder, found without importing it."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def architecture_names() -> list[str]:
    """Model architectures open_clip ships configs for (file stems of model_configs/*.json)."""
    root = open_clip_dir()
    if root is None:
        return []
    names = []
    for path in (root / "model_configs").glob("*.json"):
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
            names.append(path.stem)
    return sorted(names, key=_natural_key)


def _call_tags(node) -> dict[str, bool] | None:
    """``dict(tag=_pcfg(..., quick_gelu=True), ...)`` -> {tag: quick_gelu}."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"):
        return None
    tags = {}
    for kw in node.keywords:
        if kw.arg is None:
            continue
        quick = False
        if isinstance(kw.value, ast.Call):
            for inner in kw.value.keywords:
                if inner.arg == "quick_gelu" and isinstance(inner.value, ast.Constant):
                    quick = bool(inner.value.value)
        tags[kw.arg] = quick
    return tags


@functools.lru_cache(maxsize=1)
def pretrained_table() -> dict[str, list[str]]:
    """{architecture: [pretrained tags]} parsed from open_clip's pretrained.py ({} on failure)."""
    root = open_clip_dir()
    if root is None:
        return {}
    try:
        tree = ast.parse((root / "pretrained.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    named: dict[str, dict[str, bool]] = {}
    table: dict[str, dict[str, bool]] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
            continue
        target = stmt.targets[0]
        if not isinstance(target, ast.Name):
            continue
        tags = _call_tags(stmt.value)
        if tags is not None:
            named[target.id] = tags
        elif target.id == "_PRETRAINED" and isinstance(stmt.value, ast.Dict):
            for key, value in zip(stmt.value.keys, stmt.value.values):
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    continue
                if isinstance(value, ast.Name):
                    tags = named.get(value.id)
                else:
                    tags = _call_tags(value)
                if tags is not None:
                    table[key.value] = tags
    out: dict[str, list[str]] = {}
    for model, tags in table.items():
        out[model] = list(tags)
        quick = [t for t, q in tags.items() if q]
        if quick:  # open_clip derives '<model>-quickgelu' entries for these tags
            out.setdefault(f"{model}-quickgelu", []).extend(quick)
    return out


def _parse_all() -> list[tuple[str, list[str]]]:
    tags = pretrained_table()
    names = set(architecture_names()) | set(tags)
    return [(n, tags.get(n, [])) for n in sorted(names, key=_natural_key)]


@functools.lru_cache(maxsize=1)
def list_open_clip_models() -> list[tuple[str, list[str]]]:
    """(architecture, [pretrained tags]) for every architecture open_clip knows.

    Parsing takes ~0.1 s, so the result is cached in the interpcore cache folder, keyed by
    the installed files' modification times (a new open_clip version invalidates it).
    """
    root = open_clip_dir()
    if root is None:
        return []
    try:
        stamp = [str(root)] + [
            str(p.stat().st_mtime_ns) for p in (root / "pretrained.py", root / "model_configs")
        ]
    except OSError:
        return _parse_all()
    try:
        from interpcore import cache

        path = cache.cache_dir("listings") / f"open_clip-{cache.key_hash(*stamp)}.json"
        if path.is_file():
            return [(n, list(t)) for n, t in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError):
        return _parse_all()
    models = _parse_all()
    try:
        cache.write_text(path, json.dumps(models))
    except OSError:
        pass
    return models


def list_openai_models() -> list[tuple[str, list[str]]]:
    """The OpenAI CLIP names registered under ``clip:`` with their (single) weights tag."""
    tags = pretrained_table()
    out = []
    for name, oc in OPENAI_NAMES.items():
        if not tags or "openai" in tags.get(oc, []):
            out.append((name, ["openai"]))
    return out


def tags_for(model: str) -> list[str]:
    return pretrained_table().get(model, [])
