"""``interp dissect``: CLIP-Dissect labels for the neurons of one layer.

Only click and the core at module level: torch and the method are imported inside the
command body so that ``interp --help`` stays fast.
"""

from __future__ import annotations

import click

from interpcore.commands import backbone_options, batch_size_option, output_options
from interpcore.engine import engine_options, engine_requested

from .choices import POOLS, SIMILARITIES


@click.command("dissect")
@click.argument("images", nargs=-1)
@backbone_options("vision", help="Model whose layer is dissected (needs feature maps), 'library:model'.")
@click.option("--layer", default=None, help="Layer to dissect (default: the backbone's default layer); "
                                            "see 'interp backbones layers'.")
@click.option("--clip", "clip", default=None, show_default="the backbone itself if it is CLIP-like, else the "
              "default vision-language backbone", help="CLIP that scores images against concepts.")
@click.option("--vocabulary", "-V", default=None, show_default="the one the dataset or CLIP advertises",
              help="Concept vocabulary: a name, or a text file (one concept per line).")
@click.option("--dataset", "-d", default=None, show_default="the one the backbone advertises",
              help="Probe dataset (ignored when IMAGES are given).")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=int, default=None, help="Use only the first N probe images.")
@click.option("--similarity", type=click.Choice(SIMILARITIES), default="soft_wpmi", show_default=True,
              help="How activations and image-concept similarities are compared.")
@click.option("--pool", type=click.Choice(POOLS), default="auto", show_default=True,
              help="One activation per image: mean or max over positions / tokens, or the class token; "
                   "auto: a map's mean, a token layer's class token (the authors' code).")
@click.option("--top-k", type=int, default=None, help="Most activating images per neuron (WPMI, soft-WPMI; "
                                                      "default: the paper's).")
@click.option("--alpha", type=float, default=None, help="Softmax scale of the image-concept cosines "
                                                        "(WPMI, soft-WPMI; default: the paper's).")
@click.option("--lam", type=float, default=None, help="Weight of the concept prior (WPMI, soft-WPMI; "
                                                      "default: the paper's).")
@batch_size_option()
@output_options()
@engine_options  # dataset mode: activations and CLIP embeddings as sharded, resumable jobs (engine_job.py)
def dissect(images, backbone, pretrained, device, layer, clip, vocabulary, dataset, split, limit,
            similarity, pool, top_k, alpha, lam, batch_size, run, **engine_kw):
    """Label each neuron (channel) of a layer with a concept (CLIP-Dissect, Oikarinen and
    Weng, ICLR 2023), from its activations on probe images and a CLIP's image-concept
    similarities."""
    import interpcore

    if limit is not None and limit < 2:
        raise interpcore.InterpError(f"--limit must be >= 2, got {limit}")
    bb = interpcore.get_backbone(backbone, pretrained=pretrained, device=device)
    method = interpcore.get_explainer("dissect", bb, clip=clip, vocabulary=vocabulary, layer=layer,
                                      similarity=similarity, pool=pool, batch_size=batch_size, top_k=top_k,
                                      alpha=alpha, lam=lam)
    from .engine_job import arrays

    jobs = []
    if images:
        if engine_requested(engine_kw):
            raise interpcore.InterpError("--engine and --job-dir run over a dataset; give --dataset, not images")
        probe = list(images)
    else:
        name = dataset or interpcore.default_for("dataset", bb)
        if name is None:
            raise interpcore.InterpError(f"backbone '{bb.name}' advertises no probe dataset; name one "
                                         "with --dataset or give images")
        probe = interpcore.get_dataset(name, split=split)
    if not images and engine_requested(engine_kw):
        kw = dict(engine_kw, backbone=backbone, pretrained=pretrained, device=device, split=split, limit=limit,
                  batch_size=batch_size, pool=pool)
        scorer = method.clip_name()
        acts, emb, jobs = arrays(kw, name, method.layer, scorer or backbone, run.out,
                                 clip_pretrained=None if scorer else pretrained)
        res = method.explain_arrays(acts, emb, dataset=probe)
    else:
        res = method.explain(probe, limit=limit)
    figures = []
    if run.out is not None:
        from interpcore.figures import save_figure

        run.out.mkdir(parents=True, exist_ok=True)
        save_figure(res.figure(), run.file("labels.png"))
        res.save(run.file("result"))
        figures = ["labels.png"]
    rows = [[int(n), lab, ", ".join(c for c, _ in res.top(k, 4)[1:])]
            for k, (n, lab) in enumerate(zip(res.neurons, res.labels))]
    sections = [{"title": "Neuron labels",
                 "text": f"Each neuron of {res.layer} and the concept that best matches its activations "
                         f"on {res.n_images} probe images ({res.similarity}); the next three concepts follow.",
                 "figures": figures,
                 "tables": [{"title": "labels", "columns": ["neuron", "label", "next"], "rows": rows}]}]
    for job in jobs:
        sections.append({"title": f"Dataset job {job.spec_hash}", "text": str(job)})
    data = res.to_dict()
    data.pop("activations", None)
    data.pop("scores", None)
    run.finish(res, data=data, method="dissect", title=f"CLIP-Dissect: {res.backbone} {res.layer}",
               sections=sections, settings={"similarity": similarity, "pool": pool, "clip": res.clip, **res.settings,
                                            "vocabulary": res.vocabulary, "layer": res.layer},
               inputs=list(images) if images else [str(getattr(probe, "name", ""))])
