"""Progress bars: tqdm's own, through ``tqdm.auto``.

Whether a bar is drawn is tqdm's decision (``disable=None``): on a terminal yes, when stderr
is a pipe, a file or a CI log no, and in a Jupyter kernel the bar is a widget (``tqdm.auto``
picks ``tqdm.notebook`` when ipywidgets is installed, else the plain bar, which a kernel's
stderr hides). Two switches override it:

- ``--quiet`` (:func:`set_quiet`) or ``INTERP_QUIET=1``: no bar anywhere;
- ``INTERP_PROGRESS=1``: bars even when stderr is not a terminal (e.g. to watch a job through
  ``tee``). Quiet wins over it.
"""

from __future__ import annotations

import os

_quiet = False

_TRUE = ("1", "true", "yes", "on")


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = bool(value)


def _disable() -> bool | None:
    """tqdm's ``disable``: True (quiet asked for), False (bars forced on) or None (tqdm decides)."""
    if _quiet or os.environ.get("INTERP_QUIET", "").strip().lower() in _TRUE:
        return True
    if os.environ.get("INTERP_PROGRESS", "").strip().lower() in _TRUE:
        return False
    return None


def is_quiet() -> bool:
    """True when interpcore's bars are not drawn, for libraries whose bars cannot take
    ``disable=None`` (transformers has one global switch).

    Without a switch this is tqdm's rule for ``disable=None``, asked of tqdm itself:
    a bar is hidden when stderr has an ``isatty`` that says no, and shown in a notebook.
    """
    forced = _disable()
    if forced is not None:
        return forced
    from tqdm.auto import tqdm

    bar = tqdm(disable=None, total=0, delay=float("inf"), leave=False)
    off = bar.disable
    bar.close()
    return bool(off)


def progress(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it"):
    """A tqdm bar over ``iterable`` (or a manual bar with ``total``: call ``update(n)`` and
    ``close()``). Disabled bars cost nothing and print nothing."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    # file is left to tqdm: sys.stderr at the time the bar is made (stdout in a notebook)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=_disable(), leave=False,
                dynamic_ncols=True)
