"""Errors interpcore raises. Each one's message is a complete sentence a user can act on;
the CLI prints it as one line (``--debug`` shows the traceback)."""

from __future__ import annotations

import difflib


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
