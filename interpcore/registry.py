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

from .base import BACKBONE_ROLES, Backbone, check_capabilities
from .errors import InterpError, UnknownNameError
from .plugins import PluginManager

KINDS = ("backbone", "vocabulary", "decomposer", "explainer", "dataset", "engine")
HOOKS = {
    "backbone": "register_backbones",
    "vocabulary": "register_vocabularies",
    "decomposer": "register_decomposers",
    "explainer": "register_explainers",
    "dataset": "register_datasets",
    "engine": "register_engines",
}
CORE_PLUGIN = "interpcore"  #: the plugin name of what the core registers itself
LIST_COMMANDS = {
    "backbone": "interp backbones list",
    "vocabulary": "interp vocabularies list",
    "decomposer": "interp methods list",
    "explainer": "interp methods list",
    "dataset": "interp datasets list",
    "engine": "interp job engines",
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
    defaults: dict = dataclasses.field(default_factory=dict)  # backbones: family defaults
    default_models: dict = dataclasses.field(default_factory=dict)  # backbones: role -> model


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
        self._losers: dict[tuple[str, str], list[Entry]] = {}  # clashes: entries not used
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
            name = name or getattr(plugin, "__name__", None)
            if name is not None and self.manager.pm.get_plugin(name) is plugin:
                return self.manager.statuses[name]  # already registered and collected
            status = self.manager.register(plugin, name)
            if status.status == "ok":
                self._collect(only=status.name)
            return status

    def _collect(self, only: str | None = None) -> None:
        if only is None:  # the core's own engines, first: a plugin cannot take their names
            from .engine.engines import register_core_engines
            from .engine.sources import register_core_datasets

            register_core_engines(self._registrar("engine", CORE_PLUGIN))
            register_core_datasets(self._registrar("dataset", CORE_PLUGIN))
        for kind, hook in HOOKS.items():

            def bind(plugin_name, kind=kind):
                return {"register": self._registrar(kind, plugin_name)}

            self.manager.call_each(hook, bind, only=only)
        self._drop_failed()

    def _drop_failed(self) -> None:
        """A plugin that failed in any hook keeps none of its names; where it had won a
        clash, the next plugin that registered the name takes it."""
        failed = set(self.manager.failed())
        if not failed:
            return
        for kind, table in self.entries.items():
            for name in list(table):
                if table[name].plugin not in failed:
                    continue
                rest = [e for e in self._losers.get((kind, name), []) if e.plugin not in failed]
                if rest:
                    table[name] = rest[0]
                    self._losers[(kind, name)] = rest[1:]
                else:
                    del table[name]

    def clashes(self) -> list[dict]:
        """Names registered by more than one plugin: who kept each, and who lost."""
        return [{"kind": kind, "name": name, "kept_by": self.entries[kind][name].plugin,
                 "ignored": [e.plugin for e in losers]}
                for (kind, name), losers in sorted(self._losers.items())
                if losers and name in self.entries[kind]]

    def _registrar(self, kind: str, plugin: str):
        def register(name, factory, *, description="", requires=(), list_models=None,
                     defaults=None, default_models=None):
            if not isinstance(name, str) or not name or (kind == "backbone" and ":" in name):
                raise InterpError(f"invalid {kind} name {name!r} registered by '{plugin}'")
            if kind != "backbone" and (defaults or default_models):
                raise InterpError(f"defaults= and default_models= are for backbones, not for "
                                  f"{kind} '{name}' (registered by '{plugin}')")
            bad_roles = sorted(set(default_models or {}) - set(BACKBONE_ROLES))
            if bad_roles:
                raise InterpError(f"unknown backbone role {bad_roles[0]!r} in default_models of "
                                  f"'{name}' (roles: {', '.join(BACKBONE_ROLES)})")
            table = self.entries[kind]
            entry = Entry(
                kind, name, factory, plugin, description, tuple(requires), list_models,
                dict(defaults or {}), dict(default_models or {}),
            )
            if name in table:
                first = table[name].plugin
                if first == plugin:
                    raise InterpError(f"{kind} '{name}' is registered twice by '{plugin}'")
                msg = (
                    f"{kind} '{name}' is registered by both '{first}' and '{plugin}'; "
                    f"using '{first}' (loaded first; see 'interp plugins')"
                )
                for who in (first, plugin):
                    status = self.manager.statuses.get(who)
                    if status is not None:
                        status.warnings.append(msg)
                self._losers.setdefault((kind, name), []).append(entry)
                print(f"interp: {msg}", file=sys.stderr)
                return
            table[name] = entry

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
        backbone = entry.factory(model, pretrained=pretrained, device=device, dtype=dtype, **options)
        _check_returned(backbone, Backbone, entry)
        if entry.defaults:
            # the family's defaults, under the backbone's own (instance attribute: the class
            # attribute is a shared empty dict)
            backbone.defaults = {**entry.defaults, **(getattr(backbone, "defaults", None) or {})}
        return backbone

    def family_defaults(self, name: str) -> dict:
        """The defaults a backbone's family advertises, without loading the backbone."""
        return dict(self.entry("backbone", name.partition(":")[0]).defaults)

    def default_backbone(self, role: str) -> str:
        """The backbone name a plugin advertises as the default for ``role`` (see
        :data:`interpcore.base.BACKBONE_ROLES`): what a method uses when the user names none.
        Families are asked in registration order; the first that advertises the role wins."""
        if role not in BACKBONE_ROLES:
            raise InterpError(f"unknown backbone role '{role}'; roles: {', '.join(BACKBONE_ROLES)}")
        self.ensure_loaded()
        for prefix, entry in self.entries["backbone"].items():
            if role in entry.default_models:
                return f"{prefix}:{entry.default_models[role]}"
        raise InterpError(f"no installed plugin advertises a default {role} backbone; name one "
                          "(-b library:model, see 'interp backbones list')")

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
        from .base import Decomposer, Explainer

        method = _call_factory(entry.factory, kind, name, options, backbone)
        _check_returned(method, Decomposer if kind == "decomposer" else Explainer, entry)
        return method

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
        entry = self.entry("vocabulary", name)
        vocab = _check_returned(entry.factory(size=size, **options), Vocabulary, entry)
        return _vocab.fit_size(vocab, size)

    def get_dataset(self, name: str, split: str = "test", **options):
        from .base import Dataset

        entry, located = self.dataset_entry(name)
        ds = _check_returned(_call_factory(entry.factory, "dataset", entry.name,
                                           {**located, **options}, split=split), Dataset, entry)
        _record_source(ds, name, split, options)
        return ds

    def dataset_entry(self, name: str) -> tuple[Entry, dict]:
        """The entry of dataset ``name`` and the options its name carries: ``NAME:LOCATION``
        (``folder:photos``, ``webdataset:shards-*.tar``) is dataset ``NAME`` given
        ``location=LOCATION``, unless a dataset is registered under the whole name."""
        self.ensure_loaded()
        prefix, sep, location = name.partition(":") if isinstance(name, str) else ("", "", "")
        if sep and name not in self.entries["dataset"] and prefix in self.entries["dataset"]:
            return self.entries["dataset"][prefix], {"location": location}
        return self.entry("dataset", name), {}


def _record_source(ds, name: str, split: str, options: dict) -> None:
    """Note on a dataset how it was made, ``ds.job_source = {"dataset", "split",
    "dataset_options"}`` (the fields of an :class:`~interpcore.engine.JobSpec`), so a job
    over it can name it instead of holding the object; not set when the options are not
    JSON values (the dataset then cannot be described by name)."""
    import json

    try:
        source = json.loads(json.dumps({"dataset": name, "split": split,
                                        "dataset_options": dict(options)}, default=_path_text))
    except (TypeError, ValueError):
        return
    try:
        ds.job_source = source
    except AttributeError:  # a dataset class with __slots__ or a read-only attribute
        pass


def _path_text(value):
    """Paths among dataset options are recorded as text (what a worker would be given)."""
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


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


def _check_returned(obj, cls, entry: Entry):
    """A loader's result must be the documented type: say whose loader broke that rule."""
    if not isinstance(obj, cls):
        from .errors import PluginError

        raise PluginError(
            f"the {entry.kind} loader for '{entry.name}' (plugin '{entry.plugin}') returned "
            f"{type(obj).__name__}, not an interpcore.{cls.__name__}"
        )
    return obj


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
