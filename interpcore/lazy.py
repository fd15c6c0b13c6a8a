"""Names of a package resolved from its submodules on first use (no heavy import at start-up).

One helper for every package that exports torch-backed names without importing torch itself
(the core and the built-in plugins), in the manner of lazy_loader's ``attach``::

    __getattr__, __dir__, __all__ = interpcore.lazy.attach(
        __name__, {"backbone": ["load_timm", "ClassifierBackbone"]}, eager=["register_backbones"]
    )

A name is looked up in its submodule the first time it is asked for and then kept in the
package's namespace, so later lookups are plain attribute reads. This module imports nothing.
"""

from __future__ import annotations

import importlib
import sys


def attach(package: str, submodule_names: dict[str, list[str]], *, aliases: dict[str, str] | None = None,
           eager=()):
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    ``submodule_names`` maps a submodule (relative to ``package``) to the names it provides;
    ``aliases`` maps an exported name to the submodule attribute it stands for (``SPLICE``
    for ``SpliceModel``); ``eager`` names defined in the package itself, listed in
    ``__all__`` too.
    """
    aliases = dict(aliases or {})
    where = {name: sub for sub, names in submodule_names.items() for name in names}

    def __getattr__(name):
        sub = where.get(name)
        if sub is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f"{package}.{sub}"), aliases.get(name, name))
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(set(where) | set(eager))
