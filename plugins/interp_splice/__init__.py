"""Built-in interpcore plugin: SpLiCE (sparse, nonnegative concept decompositions of CLIP
image embeddings) with a fast certified solver, the reference package's Python API and its
command-line scripts as ``interp splice decompose|classes|dataset``.

Nothing heavy is imported here: ``interp_splice.load`` and the other API names below are
resolved on first use (``import interp_splice as splice; splice.load(...)``).
"""

from __future__ import annotations

import interpcore

__getattr__, __dir__, __all__ = interpcore.lazy.attach(__name__, {
    "api": ["load", "decompose_image", "decompose_classes", "decompose_dataset", "get_vocabulary",
            "get_preprocess", "get_tokenizer", "available_models", "SPLICE"],
    "model": ["SpliceModel", "SpliceDecomposer", "SpliceResult", "DatasetDecomposition"],
    "solvers": ["ActiveSetSolver", "solve_sklearn", "ADMMSolver", "nnqp", "objective"],
})


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
