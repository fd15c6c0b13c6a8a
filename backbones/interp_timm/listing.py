"""timm and torchvision model names WITHOUT importing torch.

timm builds its registry when ``timm.models`` is imported, which imports torch. Instead this
module finds the installed package with :func:`importlib.util.find_spec` and parses
``timm/models/*.py`` with :mod:`ast`: every function decorated ``@register_model`` is a model,
and the keys of each module's ``default_cfgs`` table (``"resnet50.a1_in1k"``) give its
pretrained tags. Parsing takes about a second, so the result is cached in the interpcore
cache folder, keyed by timm's version and the folder's modification time. The tags are read
from source, so a few models whose configs are built dynamically show no tags; the loader
(which uses timm itself) is authoritative.

torchvision: a curated list of classification models and their weight enum names (the
loader accepts any ``torchvision.models.list_models()`` name).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

TORCHVISION_MODELS = {
    "resnet18": ["IMAGENET1K_V1"],
    "resnet34": ["IMAGENET1K_V1"],
    "resnet50": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "resnet101": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "resnet152": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "resnext50_32x4d": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "resnext101_32x8d": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "wide_resnet50_2": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "wide_resnet101_2": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "densenet121": ["IMAGENET1K_V1"],
    "vgg16": ["IMAGENET1K_V1", "IMAGENET1K_FEATURES"],
    "mobilenet_v2": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "mobilenet_v3_large": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "efficientnet_b0": ["IMAGENET1K_V1"],
    "convnext_tiny": ["IMAGENET1K_V1"],
    "regnet_y_800mf": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
}


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())]


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _timm_version(root: Path) -> str:
    try:
        text = (root / "version.py").read_text(encoding="utf-8")
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
        return m.group(1) if m else "?"
    except OSError:
        return "?"


def _is_register(dec) -> bool:
    node = dec.func if isinstance(dec, ast.Call) else dec
    return (isinstance(node, ast.Name) and node.id == "register_model") or (
        isinstance(node, ast.Attribute) and node.attr == "register_model"
    )


def _parse_models(folder: Path) -> dict[str, list[str]]:
    models: dict[str, list[str]] = {}
    tags: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.py")):
        try:
            src = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if "register_model" not in src:
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(_is_register(d) for d in node.decorator_list):
                models.setdefault(node.name, [])
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and "cfgs" in t.id for t in node.targets
            ):
                value = node.value
                if isinstance(value, ast.Call) and value.args:
                    value = value.args[0]
                if isinstance(value, ast.Dict):
                    for key in value.keys:
                        if isinstance(key, ast.Constant) and isinstance(key.value, str):
                            arch, _, tag = key.value.partition(".")
                            if tag:
                                tags.setdefault(arch, []).append(tag)
    for arch, ts in tags.items():
        if arch in models:
            models[arch] = list(dict.fromkeys(ts))
    return models


def timm_models() -> dict[str, list[str]]:
    """{architecture: [pretrained tags]} from timm's source (cached)."""
    root = _package_dir("timm")
    if root is None:
        return {}
    folder = root / "models"
    try:
        stamp = f"{_timm_version(root)}-{folder.stat().st_mtime_ns}"
    except OSError:
        return {}
    from interpcore import cache

    path = cache.cache_dir("listings") / f"timm-{cache.key_hash(str(root), stamp)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    models = _parse_models(folder)
    try:
        cache.write_text(path, json.dumps(models))
    except OSError:
        pass
    return models


def list_timm_models() -> list[tuple[str, list[str]]]:
    models = timm_models()
    return [(n, models[n]) for n in sorted(models, key=_natural_key)]


def list_torchvision_models() -> list[tuple[str, list[str]]]:
    return [(n, list(t)) for n, t in TORCHVISION_MODELS.items()]
