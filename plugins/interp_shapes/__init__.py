"""Built-in interpcore plugin: the synthetic shapes world.

Registers the datasets ``shapes`` and ``shapes-spurious``, the vocabularies ``shapes`` (every
word and phrase of the world's caption language), ``shapes-attributes`` (its phrases that
name one attribute), ``shapes-captions`` (a caption pool) and
``shapes-stress`` (shapes words plus common English words), and the ``interp shapes``
commands (generate, quality, train). Only numpy and PIL are needed for the data; torch is
imported by the commands that use a model.
"""

from __future__ import annotations

import interpcore


def _shapes(split="test", **options):
    from .datasets import ShapesDataset

    return ShapesDataset(split, **options)


def _spurious(split="test", **options):
    from .datasets import SpuriousShapesDataset

    return SpuriousShapesDataset(split, **options)


def _vocab(name):
    def loader(size=None, **options):
        from . import vocab

        return vocab.load(name, size=size, **options)

    return loader


@interpcore.hookimpl
def register_datasets(register):
    register("shapes", _shapes,
             description="synthetic shapes world: 1-2 coloured shapes on textures, masks, captions "
                         "(splits train/val/test; options n=, seed=, one_object_prob=)")
    register("shapes-spurious", _spurious,
             description="Waterbirds-like shapes: circle vs hexagon, grass vs water, 95% correlated "
                         "in train, balanced groups in val/test")


@interpcore.hookimpl
def register_vocabularies(register):
    register("shapes", _vocab("shapes"),
             description="every word and short phrase of the shapes world's caption language")
    register("shapes-attributes", _vocab("shapes-attributes"),
             description="the shapes phrases that name exactly one attribute (TextSpan's pool "
                         "on the shapes datasets)")
    register("shapes-captions", _vocab("shapes-captions"),
             description="caption pool: 5,000 distinct captions of random shapes scenes")
    register("shapes-stress", _vocab("shapes-stress"),
             description="shapes words plus common English words the shapes CLIP never saw "
                         "(stress test; report its results apart)")


@interpcore.hookimpl
def register_commands(cli):
    from .cli import shapes

    cli.add_command(shapes)
