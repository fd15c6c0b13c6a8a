"""The hooks a plugin can implement.

Every hook receives a callback and calls it once per thing it provides, so a plugin can
register any number of backbones, vocabularies, methods or datasets from one function. The
callbacks only record names and loaders: nothing heavy (torch, model weights) is imported
until an object is asked for.

`docs/plugins.md` documents each hook with its exact signature; `tests/test_docs.py` fails
when the two disagree.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("interpcore")
hookimpl = pluggy.HookimplMarker("interpcore")


@hookspec
def register_backbones(register):
    """Register backbone families.

    ``register(prefix, loader, *, list_models=None, description="", defaults=None, default_models=None)``

    ``prefix`` is the part of a backbone name before the first colon (``open_clip`` in
    ``open_clip:ViT-B-32``). ``loader(model, *, pretrained=None, device="auto", dtype=None,
    **options)`` returns an :class:`interpcore.Backbone`. ``list_models()`` returns the model
    names the family knows (strings, or ``(name, [pretrained tags])`` pairs) and must not
    import torch. ``defaults``: what the family's backbones are used with when the user names
    nothing (keys in :data:`interpcore.DEFAULT_KEYS`); ``default_models``: ``{role: model}``
    for the roles in :data:`interpcore.BACKBONE_ROLES`, when the family offers the default
    backbone of a role.
    """


@hookspec
def register_vocabularies(register):
    """Register vocabularies (concept lists, text pools, caption pools).

    ``register(name, loader, *, description="")`` with ``loader(size=None, **options)``
    returning an :class:`interpcore.Vocabulary`.
    """


@hookspec
def register_decomposers(register):
    """Register decomposers: methods that split a representation into parts.

    ``register(name, factory, *, requires=(), description="")`` with
    ``factory(backbone, **options)`` returning an :class:`interpcore.Decomposer`.
    ``requires`` lists the backbone capabilities the method needs.
    """


@hookspec
def register_explainers(register):
    """Register explainers: methods that describe what a model or its parts respond to.

    ``register(name, factory, *, requires=(), description="")`` with
    ``factory(backbone, **options)`` returning an :class:`interpcore.Explainer`.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    ``register(name, factory, *, description="")`` with ``factory(split="test", **options)``
    returning an :class:`interpcore.Dataset`.
    """


@hookspec
def register_engines(register):
    """Register job engines: where the shards of a dataset job are computed.

    ``register(name, factory, *, description="")`` with ``factory(**options)`` returning an
    engine, an object with ``run(spec, shards, writer, sink)`` (see
    :mod:`interpcore.engine.engines`). ``local`` and ``ray`` are registered by interpcore.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the ``interp`` command line.

    ``cli`` is the top-level :class:`click.Group`. Import heavy modules inside the command
    functions, not at module level, so that ``interp --help`` stays fast.
    """
