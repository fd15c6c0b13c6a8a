"""``interp falcon find-groups`` and ``interp falcon explain``.

Only click and the core at module level: torch and the method are imported inside the
command bodies so that ``interp --help`` stays fast.
"""

from __future__ import annotations

import click

from interpcore.commands import backbone_options, batch_size_option, output_options
from interpcore.engine import engine_options


def _common(f):
    opts = [
        backbone_options("vision", names=("--backbone", "-b"),
                         help="Target model (needs feature maps), 'library:model'."),
        click.option("--captioner", "-c", default=None,
                     show_default="the one the backbone advertises, else the default "
                                  "vision-language backbone",
                     help="CLIP backbone that embeds crops and captions."),
        click.option("--dataset", "-d", default=None,
                     show_default="the one the backbone advertises", help="Probe dataset."),
        click.option("--split", default="test", show_default=True),
        click.option("--limit", type=int, default=None, help="Use only the first N probe images."),
        click.option("--layer", default=None,
                     help="Target layer (default: the pooled layer before the classifier)."),
        click.option("--cam", default="gradcam", show_default=True,
                     help="pytorch-grad-cam method: gradcam, gradcam++, hirescam, xgradcam, "
                          "layercam, eigencam, scorecam, ..."),
        click.option("--grouping", type=click.Choice(["reference", "coactivation"]),
                     default="reference", show_default=True,
                     help="reference: images grouped by their set of high features; "
                          "coactivation: features that fire on the same images."),
        click.option("--sigma", type=float, default=5.0, show_default=True,
                     help="High threshold = mean + SIGMA std of normalized activations."),
        click.option("--min-images", type=int, default=11, show_default=True,
                     help="Keep groups of at least this many images (11: the reference keeps more than 10)."),
        click.option("--max-images", type=int, default=50, show_default=True,
                     help="Images cropped and captioned per group (most activating first)."),
        click.option("--score-threshold", type=float, default=0.8, show_default=True,
                     help="Interpretability threshold on the mean pairwise crop cosine."),
        batch_size_option(32),
        output_options(out_names=("--out", "-o")),
        engine_options,  # the probe features: a sharded, resumable job (engine_job.py)
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _explainer(kw, **extra):
    """The explainer for the command's options; ``kw["dataset"]`` is set to the probe dataset
    (the one the target backbone advertises when none was named)."""
    import interpcore

    backbone = interpcore.get_backbone(kw["backbone"], pretrained=kw["pretrained"],
                                       device=kw["device"])
    if kw["dataset"] is None:
        kw["dataset"] = interpcore.default_for("dataset", backbone)
        if kw["dataset"] is None:
            raise interpcore.InterpError(f"backbone '{backbone.name}' advertises no probe "
                                         "dataset; name one with --dataset")
    name = kw["captioner"] or interpcore.default_for("captioner", backbone)
    if name is None:
        name = interpcore.default_backbone("vision-language")
    captioner = interpcore.get_backbone(name, device=kw["device"])
    return interpcore.get_explainer(
        "falcon", backbone, captioner=captioner, layer=kw["layer"], cam=kw["cam"],
        grouping=kw["grouping"], sigma=kw["sigma"], min_images=kw["min_images"],
        max_images=kw["max_images"], score_threshold=kw["score_threshold"],
        batch_size=kw["batch_size"], limit=kw["limit"], split=kw["split"], **extra)


def _finish(res, run, command, falcon, features=None):
    """Write the run folder's files (with --out or --report), then print and write run.json."""
    import json as _json

    sections, manifest = (), {}
    if run.out is not None:
        from .output import write_outputs

        sections, manifest = write_outputs(res, run.out, command=command, features=features,
                                           report=run.report, dataset=falcon._dataset(res),
                                           crops=falcon.cropped(res))
    run.finish(res, data=res.to_dict(), results=_json.loads(res.to_json()), sections=sections,
               **manifest)


@click.group()
def falcon():
    """FALCON: explain feature groups of a vision model with captions (Kalibhat et al. 2023).

    \b
    interp falcon find-groups -o runs/groups
    interp falcon explain --from runs/groups -o runs/explained
    """


@falcon.command("find-groups")
@_common
def find_groups(run, **kw):
    """Find feature groups and score how interpretable each one is."""
    from .engine_job import features as job_features

    f = _explainer(kw)
    feats = job_features(kw, run.out, f.backbone)
    res = f.find_groups(kw["dataset"], features=feats)
    _finish(res, run, "find-groups", f, features=feats if run.out else None)


@falcon.command("explain")
@_common
@click.option("--group", "-g", "groups", multiple=True,
              help="Group id (e.g. 3) or the group's comma-separated features (e.g. "
                   "12,40; one feature: 12,). Repeatable. Default: every interpretable "
                   "group.")
@click.option("--all-groups", is_flag=True, help="Explain every group, interpretable or not.")
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Reuse the groups and features of a 'find-groups --out DIR' run.")
@click.option("--pool", "-p", default=None,
              show_default="the one the dataset or the backbone advertises",
              help="Caption pool: vocabulary name, text file (one caption a line) or a "
                   "folder of LAION-style text_emb_<n>.npy shards with captions.")
@click.option("--top-k", type=int, default=5, show_default=True, help="Captions per image.")
@click.option("--weights", type=click.Choice(["pool", "topk", "cosine"]), default="pool",
              show_default=True, help="Caption weights used to score words.")
@click.option("--concepts", "n_concepts", type=int, default=8, show_default=True,
              help="Words and phrases kept per group.")
@click.option("--crop-view", type=click.Choice(["crop", "in-place"]), default=None,
              show_default="what the captioner advertises, else crop",
              help="What the captioner sees of a box: the crop resized (the reference) or the "
                   "box in place at its own scale.")
@click.option("--low-rule", type=click.Choice(["contrast", "reference"]), default="contrast",
              show_default=True,
              help="Which words of the lowly activating images are removed: those they show "
                   "nearly as much as the group (contrast) or any scoring >= 0.1 (reference).")
def explain(groups, all_groups, from_dir, pool, top_k, weights, n_concepts, crop_view, low_rule,
            run, **kw):
    """Caption feature groups from a caption pool and extract their concepts."""
    f = _explainer(kw, pool=pool, top_k=top_k, weights=weights, n_concepts=n_concepts,
                   crop_view=crop_view, low_rule=low_rule)
    found = features = None
    if from_dir:
        from pathlib import Path

        from interpcore.cache import load_tensors

        from .explainer import load_groups

        found = load_groups(from_dir, f)
        fpath = Path(from_dir) / "features.safetensors"
        if fpath.is_file():
            features = load_tensors(fpath)[0]["features"]
    else:
        from .engine_job import features as job_features

        features = job_features(kw, run.out, f.backbone)
    res = f.explain(found if found is not None else kw["dataset"], which=list(groups) or None,
                    only_interpretable=not all_groups, features=features)
    if features is None and run.out is not None:
        features = f.features(kw["dataset"])
    _finish(res, run, "explain", f, features=features)
