"""interp-outside: a third-party interpcore plugin written from docs/plugins.md alone.

It provides the backbone family ``outside:`` (``outside:clip``, a tiny CLIP-like ViT with a
bag-of-words text tower, and ``outside:cnn``, a tiny CNN), the explainer
``outside-saliency``, the vocabularies ``outside-words`` and ``outside-captions``, the dataset
``outside-shapes`` and the commands ``interp outside-hello`` / ``interp outside-saliency``.

Nothing here imports torch (the docs' first rule): the loaders import the modules that do.
"""

from interpcore import hookimpl

MODELS = ["clip", "cnn"]

# What the built-in methods use with an outside: backbone when the user names nothing
# (docs/plugins.md, "Defaults are data").
DEFAULTS = {
    "vocabulary": "outside-words",
    "image_mean": "outside-shapes",
    "dataset": "outside-shapes",
    "text_pool": "outside-words",
    "caption_pool": "outside-captions",
    "captioner": "outside:clip",
}

# Advertised as role defaults too: the docs say built-ins load first and
# default_backbone(role) returns the first one advertised, so these must NOT take over
# from shapes:clip-vit / shapes:resnet (the test checks that).
DEFAULT_MODELS = {"vision-language": "clip", "vision": "cnn"}


def _load(model, *, pretrained=None, device="auto", dtype=None, **options):
    if model == "clip":
        from .clip import build_clip

        return build_clip(pretrained=pretrained, device=device, dtype=dtype, **options)
    if model == "cnn":
        from .cnn import build_cnn

        return build_cnn(pretrained=pretrained, device=device, dtype=dtype, **options)
    import interpcore

    raise interpcore.get_registry().unknown_model("outside", model)


@hookimpl
def register_backbones(register):
    register("outside", _load, list_models=lambda: [(m, ["random"]) for m in MODELS],
             description="tiny random CLIP-like ViT and CNN (interp-outside)",
             defaults=dict(DEFAULTS), default_models=dict(DEFAULT_MODELS))


def _words(size=None, **options):
    from .words import load_words

    return load_words(size=size, **options)


def _captions(size=None, **options):
    from .words import load_captions

    return load_captions(size=size, **options)


@hookimpl
def register_vocabularies(register):
    register("outside-words", _words,
             description="colour, shape and scene words, least to most frequent (size=k: last k)")
    register("outside-captions", _captions,
             description="captions of the outside-shapes world (size=k: first k)")


def _shapes(split="test", **options):
    from .data import OutsideShapes

    return OutsideShapes(split, **options)


@hookimpl
def register_datasets(register):
    register("outside-shapes", _shapes,
             description="a few dozen synthetic shapes drawn with PIL, with classes and masks")


def _saliency(backbone, **options):
    from .saliency import OutsideSaliency

    return OutsideSaliency(backbone, **options)


@hookimpl
def register_explainers(register):
    register("outside-saliency", _saliency, requires=("image_encoder",),
             description="gradient saliency of one embedding dimension (interp-outside)")


@hookimpl
def register_commands(cli):
    from .cli import hello, saliency

    cli.add_command(hello)
    cli.add_command(saliency)
