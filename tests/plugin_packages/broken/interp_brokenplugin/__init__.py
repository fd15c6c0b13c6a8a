"""A plugin that fails on import, as a plugin with a missing dependency would."""

import interp_this_module_does_not_exist  # noqa: F401

from interpcore import hookimpl


@hookimpl
def register_backbones(register):
    register("broken", lambda model, **kw: None, list_models=lambda: ["model"])
