"""interpcore plugin: CLIP-Dissect (Oikarinen and Weng, ICLR 2023).

* explainer ``dissect``: label each neuron (channel) of a layer of any vision model with a
  concept from a vocabulary, from the neuron's activations on a probe dataset and a CLIP's
  image-concept similarities on the same images (soft-WPMI by default; the paper's WPMI, cos,
  cos-cubed and rank-reorder, and interpcore's rank-reorder over all images, as options).
* ``interp dissect ...`` commands.

Written against interpcore's public contract only (docs/plugins.md), as a third-party plugin
would be. Nothing heavy is imported here: the method module imports torch when first used.
"""

from __future__ import annotations

import interpcore
from interpcore import Capability


def _dissect(backbone, **options):
    from .dissect import DissectExplainer

    if backbone is None:
        backbone = interpcore.get_backbone(interpcore.default_backbone("vision"))
    return DissectExplainer(backbone, **options)


@interpcore.hookimpl
def register_explainers(register):
    register("dissect", _dissect, requires=(Capability.FEATURE_MAPS,),
             description="CLIP-Dissect: label each neuron / channel of a layer with a concept, "
                         "from its activations and a CLIP's image-concept similarities")


@interpcore.hookimpl
def register_commands(cli):
    from .cli import dissect

    cli.add_command(dissect)
