"""Progress bars that stay quiet when asked to (``--quiet``, ``INTERP_QUIET=1``) or when
stderr is not a terminal (CI logs, pipes)."""

from __future__ import annotations

import os
import sys

_quiet = False


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = bool(value)


def is_quiet() -> bool:
    if _quiet or os.environ.get("INTERP_QUIET", "").lower() in ("1", "true", "yes"):
        return True
    return not sys.stderr.isatty()


def progress(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it"):
    """A tqdm bar over ``iterable`` (or a manual bar with ``total``)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=is_quiet(), leave=False,
                dynamic_ncols=True)
