"""Names to objects: backbones, vocabularies, decomposers, explainers and datasets.

The registry is filled once, on first use, by calling every plugin's ``register_*`` hooks.
Registration only records names and loaders; the objects are built by ``get_*``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
import threading
from collections.abc import Callable, Iterable

from .base import Backbone, check_capabilities
from .errors import InterpError, UnknownNameError
from .plugins import PluginManager

KINDS = ("backbone", "vocabulary", "decomposer", "explainer", "dataset")
HOOKS = {
    "backbone": "register_backbones",
    "vocabulary": "register_vocabularies",
    "decomposer": "register_decomposers",
    "explainer": "register_explainers",
    "dataset": "register_datasets",
}
LIST_COMMANDS = {
    "backbone": "interp backbones list",
    "vocabulary": "interp vocabularies list",
    "decomposer": "interp methods list",
    "explainer": "interp methods list",
    "dataset": "interp datasets list",
}


@dataclasses.dataclass
class Entry:
    kind: str
    name: str  # the prefix, for backbones
    factory: Callable
    plugin: str
    description: str = ""
    requires: tuple[str, ...] = ()
    list_models: Callable[[], Iterable] | None = None


@dataclasses.dataclass
class BackboneInfo:
    name: str
    pretrained: list[str]
    plugin: str
    description: str = ""


class Registry:
    def __init__(self, manager: PluginManager | None = None, load_entry_points: bool = True):
        self.manager = manager or PluginManager()
        self._load_entry_points = load_entry_points
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        self._filled = False
        self._lock = threading.RLock()

    # -- filling ---------------------------------------------------------------------------
    def ensure_loaded(self) -> Registry:
        with self._lock:
            if not self._filled:
                self._filled = True
                if self._load_entry_points:
                    self.manager.load_entry_points()
                self._collect()
        return self

    def register_plugin(self, plugin, name: str | None = None):
        """Register an in-process plugin now (tests, notebooks) and collect its names."""
        with self._lock:
            self.ensure_loaded()
            status = self.manager.register(plugin, name)
            if status.status == "ok":
                self._collect(only=status.name)
            return status

    def _collect(self, only: str | None = None) -> None:
        for kind, hook in HOOKS.items():

            def bind(plugin_name, kind=kind):
                if only is not None and plugin_name != only:
                    return {"register": lambda *a, **k: None}
                return {"register": self._registrar(kind, plugin_name)}

            if only is None:
                self.manager.call_each(hook, bind)
            else:
                self._call_one(hook, only, bind)

    def _call_one(self, hook_name, plugin_name, bind):
        hook = getattr(self.manager.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            if self.manager.pm.get_name(impl.plugin) != plugin_name:
                continue
            kwargs = bind(plugin_name)
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
            except Exception as exc:  # noqa: BLE001
                self.manager.fail(plugin_name, exc, during=hook_name)

    def _registrar(self, kind: str, plugin: str):
        def register(name, factory, *, description="", requires=(), list_models=None):
            if not isinstance(name, str) or not name or (kind == "backbone" and ":" in name):
                raise InterpError(f"invalid {kind} name {name!r} registered by '{plugin}'")
            table = self.entries[kind]
            if name in table:
                first = table[name].plugin
                msg = (
                    f"{kind} '{name}' is registered by both '{first}' and '{plugin}'; "
                    f"using '{first}'"
                )
                status = self.manager.statuses.get(plugin)
                if status is not None:
                    status.warnings.append(msg)
                print(f"interp: {msg}", file=sys.stderr)
                return
            table[name] = Entry(
                kind, name, factory, plugin, description, tuple(requires), list_models
            )

        return register

    # -- lookups -----------------------------------------------------------------------
    def entry(self, kind: str, name: str) -> Entry:
        self.ensure_loaded()
        table = self.entries[kind]
        if name in table:
            return table[name]
        known = table.keys()
        if kind == "backbone":
            known = [f"{p}:..." for p in known]
        if kind in ("decomposer", "explainer"):
            other = "explainer" if kind == "decomposer" else "decomposer"
            if name in self.entries[other]:
                raise InterpError(
                    f"'{name}' is {_a(other)} {other}, not {_a(kind)} {kind}: "
                    f"use get_{other}('{name}')."
                )
        raise UnknownNameError(kind, name, known, LIST_COMMANDS[kind], self.manager.failed())

    def names(self, kind: str, pattern: str = "*") -> list[str]:
        self.ensure_loaded()
        return sorted(n for n in self.entries[kind] if fnmatch.fnmatch(n, pattern))

    # -- backbones ---------------------------------------------------------------------
    def get_backbone(
        self, name: str, pretrained=None, device: str = "auto", dtype=None, **options
    ) -> Backbone:
        if isinstance(name, Backbone):
            return name
        prefix, sep, model = name.partition(":")
        if not sep or not model:
            raise UnknownNameError(
                "backbone",
                name,
                [i.name for i in self.list_backbones()],
                LIST_COMMANDS["backbone"] + " (names are 'library:model')",
                self.manager.failed(),
            )
        entry = self.entry("backbone", prefix)
        return entry.factory(model, pretrained=pretrained, device=device, dtype=dtype, **options)

    def unknown_model(self, prefix: str, model: str) -> UnknownNameError:
        """The error a backbone loader raises for a model its library does not know."""
        known = [i.name for i in self.list_backbones(f"{prefix}:*")]
        return UnknownNameError(
            "backbone", f"{prefix}:{model}", known, f"interp backbones list '{prefix}:*'"
        )

    def list_backbones(self, pattern: str = "*") -> list[BackboneInfo]:
        self.ensure_loaded()
        out = []
        for prefix, entry in sorted(self.entries["backbone"].items()):
            models: Iterable = []
            if entry.list_models is not None:
                try:
                    models = entry.list_models()
                except Exception as exc:  # noqa: BLE001 - a lister must not break listing
                    print(f"interp: listing '{prefix}:*' failed: {exc}", file=sys.stderr)
            else:
                models = ["<model>"]
            for m in models:
                model, tags = (m, []) if isinstance(m, str) else (m[0], list(m[1]))
                full = f"{prefix}:{model}"
                if fnmatch.fnmatch(full, pattern) or fnmatch.fnmatch(full.lower(), pattern.lower()):
                    out.append(BackboneInfo(full, tags, entry.plugin, entry.description))
        return out

    # -- methods ------------------------------------------------------------------------
    def _method(self, kind: str, name: str, backbone, **options):
        entry = self.entry(kind, name)
        if isinstance(backbone, str):
            backbone = self.get_backbone(backbone)
        if backbone is not None:
            check_capabilities(name, backbone, entry.requires)
        return _call_factory(entry.factory, kind, name, options, backbone)

    def get_decomposer(self, name: str, backbone=None, **options):
        return self._method("decomposer", name, backbone, **options)

    def get_explainer(self, name: str, backbone=None, **options):
        return self._method("explainer", name, backbone, **options)

    # -- vocabularies and datasets -----------------------------------------------------
    def get_vocabulary(self, name, size: int | None = None, **options):
        """A vocabulary by registered name, or a custom one: a list of strings or a path to a
        text file (one concept per line; see :mod:`interpcore.vocab` for the cleaning policy).
        A registered name wins over a file of the same name in the working directory."""
        from .base import Vocabulary
        from . import vocab as _vocab

        if isinstance(name, Vocabulary):
            if options:
                raise InterpError(
                    f"options {sorted(options)} apply to a vocabulary name, not to a Vocabulary"
                )
            return _vocab.resize(name, size)
        if isinstance(name, (list, tuple)):
            return _vocab.from_list(name, size=size, **options)
        if not isinstance(name, str) or name not in self.names("vocabulary"):
            if _vocab.looks_like_path(name):
                return _vocab.from_file(name, size=size, **options)
        if not isinstance(name, str):
            raise InterpError(
                "a vocabulary is a registered name, a path to a text file, a list of strings "
                f"or a Vocabulary, not a {type(name).__name__}"
            )
        size = _vocab.normalize_size(size, name)
        return _vocab.fit_size(self.entry("vocabulary", name).factory(size=size, **options), size)

    def get_dataset(self, name: str, split: str = "test", **options):
        return _call_factory(self.entry("dataset", name).factory, "dataset", name, options, split=split)


def _call_factory(factory, kind: str, name: str, options: dict, *args, **fixed):
    """``factory(*args, **fixed, **options)``, with an option the plugin does not take
    reported as a one-line InterpError instead of Python's TypeError."""
    from .errors import unknown_option_error

    try:
        return factory(*args, **fixed, **options)
    except TypeError as exc:
        err = unknown_option_error(exc, kind, name, options)
        if err is None:
            raise
        raise err from None


_registry: Registry | None = None
_registry_lock = threading.Lock()


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def get_registry() -> Registry:
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Registry()
    return _registry.ensure_loaded()


def reset_registry(registry: Registry | None = None) -> Registry | None:
    """Replace the process-wide registry (``None``: rebuild it on next use). For tests."""
    global _registry
    with _registry_lock:
        _registry = registry
    return registry
