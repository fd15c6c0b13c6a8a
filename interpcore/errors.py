"""Errors interpcore raises. Each one's message is a complete sentence a user can act on;
the CLI prints it as one line (``--debug`` shows the traceback)."""

from __future__ import annotations

import difflib
import re


class InterpError(Exception):
    """Base class: a problem the user can fix (bad name, bad input, missing file)."""


class UnknownNameError(InterpError, KeyError):
    """An unknown backbone, vocabulary, method or dataset name."""

    def __init__(self, kind: str, name: str, known, list_command: str, failed: dict | None = None):
        self.kind, self.name = kind, name
        known = sorted(set(known))
        matches = close_matches(name, known)
        msg = f"unknown {kind} '{name}'."
        if failed:
            for plugin, error in failed.items():
                msg += f" It may belong to plugin '{plugin}', which failed to load: {error}."
        if matches:
            msg += " Did you mean: " + ", ".join(matches) + "?"
        msg += f" Run '{list_command}' to see the valid names."
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would add quotes
        return self.message


class CapabilityError(InterpError):
    """A backbone lacks a capability a method or call needs."""

    def __init__(self, backbone: str, capability: str, needed_by: str):
        self.backbone, self.capability, self.needed_by = backbone, capability, needed_by
        super().__init__(
            f"backbone '{backbone}' lacks the capability '{capability}' needed by {needed_by}."
        )


class PluginError(InterpError):
    """A plugin failed to load (raised only in strict mode)."""


class OfflineError(InterpError):
    """A file or weight is missing and cannot be downloaded."""


class InterpWarning(UserWarning):
    """Something the user should know that does not stop the work (an animated image read as
    its first frame, an input far from what the model was trained on). The CLI prints it as
    one line, ``interp: warning: ...``."""


def close_matches(name: str, known, n: int = 5) -> list[str]:
    """Up to ``n`` known names close to ``name``: fuzzy matches first, then substring ones."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    out = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=n, cutoff=0.6)]
    if len(out) < n:
        needle = name.lower().split(":")[-1]
        for k in known:
            if needle and needle in k.lower() and k not in out:
                out.append(k)
                if len(out) == n:
                    break
    return out[:n]


def unknown_option_error(exc: TypeError, kind: str, name: str, options: dict) -> InterpError | None:
    """An :class:`InterpError` naming the option a plugin's factory did not take, when ``exc``
    is Python's "got an unexpected keyword argument" for one of ``options``; else None."""
    m = re.search(r"([\w.<>]+)\(\) got an unexpected keyword argument '([^']+)'", str(exc))
    if not m or m.group(2) not in options:
        return None
    key = m.group(2)
    known = _parameters_of(m.group(1), exc)
    msg = f"{kind} '{name}' has no option '{key}'."
    near = close_matches(key, known, n=3)
    if near:
        msg += " Did you mean: " + ", ".join(near) + "?"
    if known:
        msg += " Its options: " + ", ".join(known) + "."
    return InterpError(msg)


def _parameters_of(qualname: str, exc: BaseException) -> list[str]:
    """The keyword parameters of the callable ``qualname`` names, looked up in the frame that
    made the failing call (best effort: [] when it cannot be found)."""
    import inspect

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return []
    frame = tb.tb_frame
    parts = qualname.split(".")
    obj = frame.f_locals.get(parts[0], frame.f_globals.get(parts[0]))
    for part in parts[1:]:
        obj = getattr(obj, part, None)
    if obj is None:
        return []
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name not in ("self", "split")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
