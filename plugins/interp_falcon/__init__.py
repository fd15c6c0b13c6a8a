"""Built-in interpcore plugin: FALCON (explain feature groups of any vision model).

Module level imports only ``interpcore``: the method (torch, pytorch-grad-cam, scikit-learn)
is imported when the explainer is built or a ``interp falcon`` command runs.
"""

from __future__ import annotations

import interpcore


def _factory(backbone, **options):
    from .explainer import Falcon

    return Falcon(backbone, **options)


@interpcore.hookimpl
def register_explainers(register):
    register(
        "falcon",
        _factory,
        requires=(interpcore.Capability.FEATURE_MAPS,),
        description="FALCON: feature groups of a vision model explained by captions "
                    "(Grad-CAM crops + CLIP caption retrieval)",
    )


@interpcore.hookimpl
def register_commands(cli):
    from .cli import falcon

    cli.add_command(falcon)
