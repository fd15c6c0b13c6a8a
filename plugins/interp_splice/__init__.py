"""Built-in interpcore plugin: SpLiCE (sparse, nonnegative concept decompositions of CLIP
image embeddings) with a fast certified solver, the reference package's Python API and its
command-line scripts as ``interp splice decompose|classes|dataset``.

Nothing heavy is imported here: ``interp_splice.load`` and the other API names below are
resolved on first use (``import interp_splice as splice; splice.load(...)``).
"""

from __future__ import annotations

import interpcore

_API = {
    "load": "api", "decompose_image": "api", "decompose_classes": "api",
    "decompose_dataset": "api", "get_vocabulary": "api", "get_preprocess": "api",
    "get_tokenizer": "api", "available_models": "api",
    "SpliceModel": "model", "SPLICE": "api", "SpliceDecomposer": "model",
    "SpliceResult": "model", "DatasetDecomposition": "model",
    "ActiveSetSolver": "solvers", "solve_sklearn": "solvers", "ADMMSolver": "solvers",
    "nnqp": "solvers", "objective": "solvers",
}

__all__ = sorted(_API)


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'interp_splice' has no attribute '{name}'")
    import importlib

    mod = importlib.import_module(f"{__name__}.{module}")
    value = getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_API))


def _factory(backbone, **options):
    from .model import SpliceDecomposer

    return SpliceDecomposer(backbone, **options)


@interpcore.hookimpl
def register_decomposers(register):
    register(
        "splice",
        _factory,
        requires=(interpcore.Capability.IMAGE_ENCODER, interpcore.Capability.TEXT_ENCODER),
        description="SpLiCE: sparse nonnegative decomposition of image embeddings into words",
    )


@interpcore.hookimpl
def register_commands(cli):
    from .cli import splice

    cli.add_command(splice)
