"""The plugin's commands, built with interpcore.commands' shared options (no torch here)."""

from __future__ import annotations

import click

from interpcore.commands import backbone_options, batch_size_option, output_options


@click.command("outside-hello")
@click.argument("images", nargs=-1, required=True)
@backbone_options(role="vision-language")
@batch_size_option()
@output_options()
def hello(images, backbone, pretrained, device, batch_size, run):
    """Embed IMAGES and name the closest word of the backbone's default vocabulary."""
    import interpcore
    from .results import HelloResult

    bb = interpcore.get_backbone(backbone, pretrained=pretrained, device=device)
    z = bb.encode_image(list(images), normalize=True, batch_size=batch_size)
    words, closest = None, [None] * len(images)
    if interpcore.Capability.TEXT_ENCODER in bb.capabilities:
        words = interpcore.get_vocabulary(interpcore.default_for("vocabulary", bb, fallback="outside-words"))
        t = bb.encode_text(list(words.concepts), normalize=True)
        best = (z @ t.T).argmax(dim=1).tolist()
        closest = [words.concepts[i] for i in best]
    result = HelloResult(backbone=bb.name, embed_dim=int(z.shape[1]), images=list(images),
                         closest=closest, vocabulary=None if words is None else words.name)
    rows = [[im, w] for im, w in zip(images, closest)]
    run.finish(result, method="outside-hello", title=f"outside-hello on {bb.name}",
               settings={"backbone": bb.name, "pretrained": pretrained, "batch_size": batch_size},
               inputs=list(images),
               sections=[{"title": "Closest words",
                          "text": "Each image's nearest word of the vocabulary, by cosine.",
                          "tables": [{"title": "closest", "columns": ["image", "word"],
                                      "rows": rows}]}])


@click.command("outside-saliency")
@click.argument("images", nargs=-1, required=True)
@backbone_options(role="vision-language")
@click.option("--target", type=int, default=None,
              help="embedding dimension to explain (default: the embedding's norm)")
@output_options()
def saliency(images, backbone, pretrained, device, target, run):
    """Gradient saliency maps of IMAGES (the outside-saliency explainer)."""
    import interpcore

    bb = interpcore.get_backbone(backbone, pretrained=pretrained, device=device)
    explainer = interpcore.get_explainer("outside-saliency", bb, target=target)
    result = explainer.explain(list(images))
    figures = []
    if run.out is not None:
        from interpcore import figures as fig

        for i, (image, m) in enumerate(zip(images, result.maps)):
            f = fig.heatmap_grid(image, {"saliency": m.numpy()}, title=str(image))
            figures.append(fig.save_figure(f, run.file(f"saliency_{i}.png"))[0])
    run.finish(result, method="outside-saliency", title=f"outside-saliency on {bb.name}",
               settings={"backbone": bb.name, "pretrained": pretrained, "target": target},
               inputs=list(images),
               sections=[{"title": "Saliency",
                          "text": "Bright pixels change the embedding most.",
                          "figures": [str(p) for p in figures]}] if figures else ())
