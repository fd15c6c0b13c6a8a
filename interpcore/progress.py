"""Progress bars that stay quiet when asked to (``--quiet``, ``INTERP_QUIET=1``) or when
stderr is not a terminal (CI logs, pipes, redirected output).

``INTERP_PROGRESS=1`` forces bars on (e.g. to watch a job through ``tee``); in a Jupyter
kernel bars are shown (as widgets through ``tqdm.auto``) unless quiet was asked for.
"""

from __future__ import annotations

import os
import sys

_quiet = False

_TRUE = ("1", "true", "yes", "on")


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = bool(value)


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # closed or detached stream
        return False


def _in_jupyter_kernel() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # noqa: BLE001
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def is_quiet() -> bool:
    """True when progress bars must not be drawn."""
    if _quiet or os.environ.get("INTERP_QUIET", "").strip().lower() in _TRUE:
        return True
    if os.environ.get("INTERP_PROGRESS", "").strip().lower() in _TRUE:
        return False
    return not (_stderr_is_terminal() or _in_jupyter_kernel())


def progress(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it"):
    """A tqdm bar over ``iterable`` (or a manual bar with ``total``: call ``update(n)`` and
    ``close()``). Disabled bars cost nothing and print nothing."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=is_quiet(), leave=False,
                dynamic_ncols=True, file=sys.stderr)
