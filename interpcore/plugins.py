"""Finding, loading and isolating plugins.

Plugins are modules listed under the ``interpcore`` entry-point group (the built-in ones
too). Each is imported and registered inside its own ``try``: a plugin that fails to import,
implements a hook that does not exist, or raises inside a hook is recorded as failed and
reported in one line on stderr; the others keep working.

Environment switches (read when plugins are first loaded):

``INTERP_NO_PLUGINS=1``
    load no entry-point plugins at all.
``INTERP_PLUGINS=a,b``
    load only these entry-point names.
``INTERP_DISABLE_PLUGINS=a,b``
    load all but these (they show as ``disabled``).
``INTERP_STRICT_PLUGINS=1``
    raise :class:`~interpcore.errors.PluginError` on the first plugin failure.

Precedence (the same from the CLI and the Python API, in any working directory): the
built-in plugins (entry points of the ``interpcore`` distribution) load first, in the order
``pyproject.toml`` lists them; then third-party plugins sorted by distribution name, then
entry-point name; plugins registered in-process (``Registry.register_plugin``) last. When two
plugins register the same name, the one loaded first keeps it and the clash is reported
(stderr and ``interp plugins``); disable the winner (``INTERP_DISABLE_PLUGINS``) to let the
other take over. A plugin that fails in any hook keeps none of its names.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import traceback
from importlib import metadata

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "interpcore"
CORE_DISTRIBUTION = "interpcore"


@dataclasses.dataclass
class PluginStatus:
    name: str
    status: str  # "ok", "failed" or "disabled"
    module: str = ""
    distribution: str = "-"
    version: str = "-"
    hooks: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    traceback: str | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("traceback")
        return d


def _env_list(var: str) -> list[str] | None:
    value = os.environ.get(var)
    if value is None or not value.strip():
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _env_flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no")


def strict_mode() -> bool:
    return _env_flag("INTERP_STRICT_PLUGINS")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class PluginManager:
    """A pluggy manager that loads entry points one at a time and records their status."""

    def __init__(self):
        self.pm = pluggy.PluginManager("interpcore")
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}
        self._quiet_names: set[str] = set()

    # -- loading -------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        if _env_flag("INTERP_NO_PLUGINS"):
            return
        only = _env_list("INTERP_PLUGINS")
        disabled = set(_env_list("INTERP_DISABLE_PLUGINS") or ())
        seen: set[str] = set()
        for ep, dist_name, version in _ordered_entry_points():
            if ep.name in seen:
                # pluggy's own loader silently skips this case; say it instead.
                self.statuses[ep.name].warnings.append(
                    f"a second entry point named '{ep.name}' ({ep.value}, from {dist_name}) "
                    "was ignored"
                )
                continue
            seen.add(ep.name)
            if (only is not None and ep.name not in only) or ep.name in disabled:
                self.statuses[ep.name] = PluginStatus(
                    ep.name, "disabled", ep.value, dist_name, version
                )
                self.pm.set_blocked(ep.name)
                continue
            self._load_one(ep.name, ep.load, ep.value, dist_name, version)

    def is_builtin(self, name: str) -> bool:
        status = self.statuses.get(name)
        return status is not None and _canonical(status.distribution) == CORE_DISTRIBUTION

    def register(self, plugin, name: str | None = None) -> PluginStatus:
        """Register an in-process plugin (a module or object with hook implementations)."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if self.pm.get_plugin(name) is plugin and name in self.statuses:
            return self.statuses[name]  # the same plugin again: nothing to do
        return self._load_one(name, lambda: plugin, getattr(plugin, "__name__", name), "-", "-")

    def _load_one(self, name, load, module, dist, version) -> PluginStatus:
        status = PluginStatus(name, "ok", module, dist, version)
        self.statuses[name] = status
        try:
            plugin = load()
            self.pm.register(plugin, name=name)
            unknown = [
                hc.name for hc in (self.pm.get_hookcallers(plugin) or []) if hc.spec is None
            ]
            if unknown:
                self.pm.unregister(plugin)
                valid = [n for n in dir(hookspecs) if n.startswith("register_")]
                hints = []
                for u in unknown:
                    close = difflib.get_close_matches(u, valid, n=1)
                    hints.append(f"'{u}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
                raise PluginError("implements unknown hook " + ", ".join(hints))
            status.hooks = sorted(
                hc.name for hc in (self.pm.get_hookcallers(plugin) or [])
            )
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            self.fail(name, exc)
        return status

    def fail(self, name: str, exc: BaseException, during: str = "") -> None:
        status = self.statuses.setdefault(name, PluginStatus(name, "failed"))
        status.status = "failed"
        error = _describe(exc)
        status.error = f"{during}: {error}" if during else error
        status.traceback = "".join(traceback.format_exception(exc))
        if strict_mode():
            raise PluginError(f"plugin '{name}' failed to load: {status.error}") from exc
        if name not in self._quiet_names:
            print(
                f"interp: plugin '{name}' failed to load ({status.error}); "
                "run 'interp plugins' for details",
                file=sys.stderr,
            )

    # -- calling hooks, one implementation at a time -------------------------------------
    def call_each(self, hook_name: str, bind, only: str | None = None, after=None) -> None:
        """Call every implementation of a hook separately, in load order, isolating failures.

        ``bind(plugin_name)`` returns the keyword arguments for that plugin's call, so that
        what a plugin registers can be attributed to it. Implementations may accept fewer
        arguments than the spec (pluggy's rule), so the specs can grow without breaking
        old plugins. ``only``: call just that plugin's implementation. ``after(plugin_name)``
        runs after each call, also a failed one (e.g. to check or undo what it changed).
        """
        hook = getattr(self.pm.hook, hook_name)
        # get_hookimpls() is in registration order (pluggy *calls* them in reverse).
        for impl in hook.get_hookimpls():
            name = self.pm.get_name(impl.plugin)
            if only is not None and name != only:
                continue
            if self.statuses.get(name) and self.statuses[name].status == "failed":
                continue
            kwargs = bind(name)
            args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
            try:
                impl.function(**args)
            except Exception as exc:  # noqa: BLE001
                self.fail(name, exc, during=hook_name)
            if after is not None:
                after(name)

    def failed(self) -> dict[str, str]:
        return {n: s.error for n, s in self.statuses.items() if s.status == "failed"}


def _canonical(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-").replace(".", "-")


def _ordered_entry_points():
    """``(entry point, distribution name, version)`` in the documented precedence order."""
    core, others = [], []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "-"
        version = dist.version if dist is not None else "-"
        item = (ep, dist_name, version)
        (core if _canonical(dist_name) == CORE_DISTRIBUTION else others).append(item)
    # sorted() is stable: the core keeps pyproject.toml's order; others by distribution,
    # then entry-point name, whatever order sys.path (and so the working directory) gives.
    others.sort(key=lambda item: (_canonical(item[1]), item[0].name))
    return core + others

