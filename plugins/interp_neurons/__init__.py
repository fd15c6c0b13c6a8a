"""interpcore plugin: the second-order lens on MLP neurons (Gandelsman, Efros and Steinhardt,
"Interpreting the Second-Order Effects of Neurons in CLIP", ICLR 2025).

* explainer ``neurons``: each MLP neuron's second-order effect on a CLIP ViT's image
  representation (through the later attention layers' class-token rows), its sparsity over
  images, its principal direction decomposed sparsely into texts (with the SpLiCE decomposer
  from the registry), mean-ablation of neurons and their effect on zero-shot accuracy, and
  the neurons that carry a concept.
* ``interp neurons ...`` commands.

Written against interpcore's public contract only (docs/plugins.md); it needs the residual
stream's MLP neuron access (``ViTBlockParts.mlp_hidden``). Nothing heavy is imported here.
"""

from __future__ import annotations

import interpcore
from interpcore import Capability

_REQUIRES = (Capability.VIT_RESIDUAL_STREAM, Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER)


def _neurons(backbone, **options):
    from .lens import NeuronsExplainer

    if backbone is None:
        backbone = interpcore.get_backbone(interpcore.default_backbone("vision-language"))
    return NeuronsExplainer(backbone, **options)


@interpcore.hookimpl
def register_explainers(register):
    register("neurons", _neurons, requires=_REQUIRES,
             description="second-order lens: MLP neurons' effects on a CLIP ViT's representation through "
                         "later attention, their sparsity and text decompositions, mean-ablation")


@interpcore.hookimpl
def register_commands(cli):
    from .cli import neurons

    cli.add_command(neurons)
