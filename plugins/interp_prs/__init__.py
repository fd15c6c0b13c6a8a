"""Built-in interpcore plugin: PRS and TextSpan (Gandelsman et al., ICLR 2024).

* decomposer ``prs``: exact decomposition of a CLIP ViT image embedding into direct
  contributions of the input embedding, every MLP and every attention head (optionally per
  source patch), with the final LayerNorm and projection folded in.
* explainer ``textspan``: a greedy basis of texts for each head of the last layers.
* ``interp prs ...`` / ``interp textspan ...`` commands: decompose, ablate, heatmap, segment,
  spurious, search.

Nothing heavy is imported here: the method modules import torch when first used.
"""

from __future__ import annotations

import interpcore
from interpcore import Capability

_REQUIRES = (Capability.VIT_RESIDUAL_STREAM, Capability.IMAGE_ENCODER)


def _prs(backbone, **options):
    from .decompose import PRSDecomposer

    return PRSDecomposer(backbone, **options)


def _textspan(backbone, **options):
    from .textspan import TextSpanExplainer

    return TextSpanExplainer(backbone, **options)


@interpcore.hookimpl
def register_decomposers(register):
    register(
        "prs", _prs, requires=_REQUIRES,
        description="PRS: exact per-layer / per-head / per-patch contributions to a CLIP ViT "
                    "image embedding",
    )


@interpcore.hookimpl
def register_explainers(register):
    register(
        "textspan", _textspan, requires=_REQUIRES + (Capability.TEXT_ENCODER,),
        description="TextSpan: label each attention head of a CLIP ViT with a greedy basis of texts",
    )


@interpcore.hookimpl
def register_commands(cli):
    from .cli import prs, textspan

    cli.add_command(prs)
    cli.add_command(textspan)
