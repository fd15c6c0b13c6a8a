"""``interp prs ...`` and ``interp textspan ...`` commands.

Only click and the core are imported here; torch and the method modules are imported inside
the command bodies, so ``interp --help`` stays fast. When no backbone or dataset is named,
a command uses the installed default vision-language backbone and the datasets it advertises
(offline with the built-in plugins).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from interpcore import InterpError
from interpcore.commands import backbone_options, batch_size_option, output_options
from interpcore.engine import engine_options, engine_requested


# --------------------------------------------------------------------------------------
# Shared options and helpers
# --------------------------------------------------------------------------------------


def _common(f=None, *, limit=2000, quiet_names=("-q", "--quiet"),
            dataset_help="Dataset name (default: the one the backbone advertises)."):
    """The options every dataset command shares; the command gets ``run`` (its outputs) and
    the rest as keyword arguments."""
    opts = [
        backbone_options("vision-language", help="Backbone name 'library:model' (a CLIP ViT)."),
        click.option("-d", "--dataset", default=None, help=dataset_help),
        click.option("--split", default="test", show_default=True),
        click.option("--root", default=None, help="Dataset root folder or file (datasets that need one)."),
        click.option("-n", "--limit", type=int, default=limit, show_default=True,
                     help="Use at most this many images of the dataset (0: all)."),
        batch_size_option(),
        output_options(quiet_names=quiet_names),
    ]

    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco(f) if f is not None else deco


def _start(kw, run):
    """``kw["out"]``: the user's --out (stores and engine jobs go there, never into the
    temporary folder of a --report-only run); ``kw["as_json"]``: --json."""
    kw["out"] = str(run.user_out) if run.user_out is not None else None
    kw["as_json"] = run.as_json


def _family_defaults(name: str) -> dict:
    """What a backbone name's family advertises, without loading the model."""
    from interpcore import get_registry

    try:
        return dict(get_registry().entry("backbone", str(name).partition(":")[0]).defaults)
    except InterpError:
        return {}


def _dataset_name(kw, bb=None, key="dataset"):
    """``--dataset``, else the dataset the backbone advertises under ``key`` (``dataset``,
    ``spurious_dataset``); ``kw["dataset"]`` is set to it."""
    from interpcore import default_for

    if not kw.get("dataset"):
        kw["dataset"] = default_for(key, bb if bb is not None else _family_defaults(kw["backbone"]))
        if not kw["dataset"]:
            what = "group-robustness dataset" if key == "spurious_dataset" else "dataset"
            raise InterpError(f"backbone '{kw['backbone']}' advertises no default {what}; "
                              "name one with -d/--dataset")
    return kw["dataset"]


def _backbone(kw):
    import interpcore

    return interpcore.get_backbone(kw["backbone"], pretrained=kw["pretrained"], device=kw["device"])


def _dataset(kw, split=None, name=None, bb=None):
    import interpcore

    if name is None:
        _dataset_name(kw, bb)
    opts = {}
    if kw.get("root"):
        opts["root"] = kw["root"]
    return interpcore.get_dataset(name or kw["dataset"], split=split or kw["split"], **opts)


def _limit(kw):
    return None if not kw.get("limit") else int(kw["limit"])


def _job_names(kw, split=None) -> dict:
    """A job's dataset and backbone, as the command names them (so workers build them)."""
    return {"dataset": kw["dataset"], "split": split or kw["split"],
            "dataset_options": {"root": kw["root"]} if kw.get("root") else {},
            "backbone": kw["backbone"],
            "backbone_options": {"pretrained": kw["pretrained"]} if kw.get("pretrained") else {}}


def _job_dir(kw, name="job"):
    """``--job-dir`` (plus the suffix of ``name`` after ``job``), else ``--out/NAME``, else
    None (the user cache, keyed by the job's spec)."""
    if kw.get("job_dir"):
        return str(kw["job_dir"]).rstrip("/") + name[len("job"):]
    return str(Path(kw["out"]) / name) if kw.get("out") else None


def _store(kw, bb=None, *, layers=None, per_patch=False, split=None, limit=None, name="job"):
    """The PRS store every dataset command reads: the job of :func:`interp_prs.decompose.
    job_spec` named by the command's backbone and dataset names, run (or resumed, or reused)
    in ``--job-dir``, else ``--out/job``, else the user cache; ``name``: the folder under
    ``--out`` (and the suffix after ``--job-dir``) of a second job of one command."""
    from interpcore.engine import engine_run_args

    from .decompose import PRSDecomposer, job_spec, run_store

    spec = job_spec(**_job_names(kw, split), per_patch=per_patch, layers=layers,
                    batch_size=kw["batch_size"], shard_size=kw.get("shard_size") or 256,
                    limit=_limit(kw) if limit is None else limit)
    job_dir = _job_dir(kw, name)
    args = engine_run_args(kw, kw.get("device", "auto"))
    if args["engine"] == "local" and bb is not None:  # the model this command loaded already
        args.update(backbone=bb, method=PRSDecomposer(bb))
    store = run_store(spec, job_dir, stream=bb.residual_stream() if bb is not None else None,
                      **args)
    _echo_job("PRS", store.result)
    return store


def _echo_job(what, result):
    """Where a command's job is and what this run computed (a rerun: 0 shards)."""
    click.echo(f"{what} job folder: {result.out_dir} ({len(result.computed)} of "
               f"{result.num_shards} shard(s) computed, {len(result.skipped)} reused)", err=True)


def _rel(paths, out):
    out = Path(out)
    return [str(Path(p).resolve().relative_to(out.resolve())) for p in paths]


def _settings(kw, **extra):
    keep = ("backbone", "pretrained", "dataset", "split", "limit", "batch_size")
    d = {k: kw.get(k) for k in keep if k in kw}
    d.update(extra)
    return d


def _parse_layers(spec):
    if spec is None or spec == "":
        return None
    s = str(spec)
    if s.lstrip("-").isdigit() and not s.startswith("-"):
        return int(s)  # the last k layers
    return [int(v) for v in s.split(",") if v.strip()]


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


@click.group()
def prs():
    """PRS: exact decomposition of a CLIP ViT's image embedding (layers, heads, patches)."""


@click.group()
def textspan():
    """TextSpan: label attention heads with texts."""


# -- decompose ---------------------------------------------------------------------

@prs.command("decompose")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@_common
@click.option("--per-patch", is_flag=True, help="Per source patch, not only per head.")
@click.option("--layers", default=None, help="Layers whose heads to record: k (last k) or 0,3,5.")
@engine_options  # dataset mode only: sharded, resumable, local or on Ray (docs/scaling.md)
def decompose_cmd(images, per_patch, layers, run, **kw):
    """Decompose IMAGES (or, without images, a whole dataset into a PRS store).

    Prints how much each layer's attention and MLP contribute and checks that the
    contributions sum to the embedding. With --out, images' contributions are saved as
    contributions.safetensors. A dataset is decomposed as a sharded, resumable job in
    --job-dir, else OUT/job, else the user cache; a rerun reuses the finished shards.
    """
    _start(kw, run)
    from .decompose import PRSDecomposer

    if images and engine_requested(kw):
        raise InterpError("--engine / --job-dir apply to a whole dataset: leave out IMAGES")
    if images:
        bb = _backbone(kw)
        dec = PRSDecomposer(bb, per_patch=per_patch, layers=_parse_layers(layers))
        res = dec.decompose(list(images), batch_size=kw["batch_size"])
        files = []
        if run.out is not None:
            from interpcore.cache import save_tensors

            t = {k: getattr(res, k) for k in ("embedding", "embed", "attn", "attn_bias", "attn_cls",
                                              "mlps", "ln_bias", "std", "norm")}
            if res.heads is not None:
                t["heads"] = res.heads
            p = save_tensors(run.out / "contributions.safetensors", t,
                             {"head_layers": res.head_layers, "per_patch": res.per_patch})
            files.append(str(p))
        inputs = list(images)
    else:  # a whole dataset: a sharded, resumable job (local or Ray)
        bb = _backbone(kw) if (kw.get("engine") or "local") == "local" else None
        _dataset_name(kw, bb)
        store = _store(kw, bb, per_patch=per_patch, layers=_parse_layers(layers))
        res = _store_summary(store)
        inputs = [kw["dataset"]]
    run.finish(res, method="prs", title=f"PRS decomposition on {kw['backbone']}",
               settings=_settings(kw, per_patch=per_patch, layers=layers), inputs=inputs,
               sections=[{"title": "Contributions",
                          "text": "Mean norm of the direct contribution of each layer's attention "
                                  "and MLP to the image embedding; the contributions sum to the "
                                  "embedding (relative error shown).",
                          "tables": [_layer_table(res)]}])

# -- ablate -------------------------------------------------------------------------

@prs.command("ablate")
@_common
@click.option("--task", default=None, help="Zero-shot task (default: the one the dataset "
              "advertises, else its labels).")
@click.option("--templates", default=None, help="openai, simple, a file of templates, or one template.")
@engine_options
def ablate_cmd(task, templates, run, **kw):
    """Mean-ablation study: zero-shot accuracy with MLPs, class-token terms or attention
    layers (cumulatively) replaced by their dataset mean."""
    _start(kw, run)
    from .ablation import mean_ablation_study, plot_ablation
    from .tasks import default_task, task_weights

    bb = _backbone(kw)
    ds = _dataset(kw, bb=bb)
    store = _store(kw, bb, layers=[])
    task = task or default_task(ds)
    t = ds.zeroshot_task(task, templates)
    res = mean_ablation_study(store, task_weights(bb, t).numpy(), t.labels(store.samples),
                              task=task, backbone=bb.name)
    figs = []
    if run.out is not None:
        figs = _rel([plot_ablation(res, run.out / "ablation.png")], run.out)
    run.finish(res, method="prs", title=f"Mean-ablation study of {bb.name}",
               settings=_settings(kw, task=task, templates=templates), inputs=[kw["dataset"]],
               sections=[{"title": "Mean-ablation study",
                          "text": "Zero-shot accuracy when components are replaced by their mean "
                                  "over the dataset. A large drop means the component's direct "
                                  "effect matters; the paper finds late attention layers carry "
                                  "most of it.",
                          "figures": figs, "tables": [res.table()]}])

# -- textspan -----------------------------------------------------------------------

@textspan.command("run")
@_common
@click.option("--pool", default=None, help="Text pool: vocabulary name or .txt file "
              "(default: the one the dataset or backbone advertises, else "
              "image_descriptions_general).")
@click.option("--layers", "n_layers", type=int, default=4, show_default=True,
              help="Label the heads of the last k layers.")
@click.option("--texts-per-head", type=int, default=10, show_default=True)
@click.option("--rank", type=int, default=None,
              help="Dimension of each head's span the texts are projected onto (default and "
                   "maximum: the head dimension).")
@click.option("--task", default=None, help="Zero-shot task for the accuracy figures.")
@engine_options
def textspan_cmd(pool, n_layers, texts_per_head, rank, task, run, **kw):
    """Greedy text basis for every head of the last layers, with the variance each text
    explains and the accuracy after replacing the heads by their text reconstructions."""
    _start(kw, run)
    from .tasks import default_task
    from .textspan import TextSpanExplainer

    bb = _backbone(kw)
    ex = TextSpanExplainer(bb, pool=pool, layers=n_layers, texts_per_head=texts_per_head, rank=rank)
    ds = _dataset(kw, bb=bb)
    store = _store(kw, bb, layers=ex.layers)
    res = ex.explain(store, task=task or default_task(ds, allow_none=True))
    figs = []
    if run.out is not None:
        res.write(run.out)
        figs = _rel([_textspan_figure(res, run.out / "textspan_heads.png")], run.out)
    rows = [[f"L{h['layer']}.H{h['head']}", f"{100 * h['total_explained']:.1f}%",
             " | ".join(h["texts"][:3])] for h in res.heads]
    acc_rows = [[k, round(v, 2)] for k, v in res.accuracy.items()]
    run.finish(res, method="textspan", title=f"TextSpan head labels of {bb.name}",
               settings=_settings(kw, pool=res.pool, layers=n_layers,
                                  texts_per_head=texts_per_head, rank=rank),
               inputs=[kw["dataset"], res.pool],
               sections=[{"title": "Head labels",
                          "text": "For each head, the texts chosen greedily to span its outputs, "
                                  "and the share of the head's variance (over the images) they "
                                  "explain. textspan_heads.txt lists all texts of each head.",
                          "figures": figs,
                          "tables": [{"title": "First texts per head",
                                      "columns": ["head", "explained", "texts"], "rows": rows},
                                     {"title": "Accuracy",
                                      "columns": ["representation", "accuracy (%)"],
                                      "rows": acc_rows}]}])

# -- heatmap ------------------------------------------------------------------------

def _file_stems(names) -> list[str]:
    """File-name stems after the images (``examples/red_circle.png`` -> ``red_circle``,
    a dataset sample -> its name), made unique by their position where two collide."""
    import re

    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(n)).stem).strip("_") or f"image{i}"
             for i, n in enumerate(names)]
    return [f"{s}-{i}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def _peaks(maps, names, texts) -> list[dict]:
    """The hottest patch of every (image, text) map: ``[{image, text, patch: [row, col], value}]``."""
    gw = maps.shape[-1]
    flat = maps.flatten(2)
    val, idx = flat.max(-1)
    return [{"image": str(nm), "text": t, "patch": [int(idx[i, j]) // gw, int(idx[i, j]) % gw],
             "value": float(val[i, j])}
            for i, nm in enumerate(names) for j, t in enumerate(texts)]


@prs.command("heatmap")
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@backbone_options("vision-language")
@click.option("-t", "--text", "texts", multiple=True,
              help="A text (repeatable). Default: the classes of the default zero-shot task of "
                   "the dataset (--dataset, else the one the backbone advertises).")
@click.option("--layers", default=None, help="Layers to sum: k (last k) or 0,3 (default all).")
@click.option("--heads", default=None, help="Only these heads: LAYER.HEAD,LAYER.HEAD.")
@click.option("--per-head", is_flag=True, help="Also save the joint head x patch grid per text.")
@click.option("--no-contrast", is_flag=True, help="Do not subtract the mean over the texts.")
@click.option("--dataset", default=None, help="Take images from a dataset instead (with --index).")
@click.option("--index", "indices", type=int, multiple=True, help="Dataset index (repeatable).")
@output_options(out_required=True)
def heatmap_cmd(images, texts, layers, heads, per_head, no_contrast, dataset, indices, run, **kw):
    """Per-text heatmaps over the patches of IMAGES, saved as overlays in OUT."""
    import torch

    from interpcore import figures

    from .decompose import PRSDecomposer
    from .spatial import head_patch_maps, input_size, patch_maps
    from .spurious import parse_heads

    bb = _backbone(kw)
    texts = list(texts) or _default_texts(bb, dataset)
    pics, names = _images(images, dataset, indices, bb)
    size = input_size(bb)
    dec = PRSDecomposer(bb, per_patch=True, layers=_parse_layers(layers))
    r = dec.decompose([p.convert("RGB").resize((size[1], size[0])) for p in pics])
    T = bb.encode_text(list(texts), normalize=True).float().cpu()
    maps = patch_maps(r, T, heads=parse_heads(heads) or None)  # (N, k, gh, gw)
    if len(texts) > 1 and not no_contrast:
        maps = maps - maps.mean(1, keepdim=True)
    contrast = len(texts) > 1 and not no_contrast
    unit = "direct contribution to z . text" + (" minus its mean over the texts" if contrast else "")
    out = run.out
    written = []
    stems = _file_stems(names)
    for i, (img, nm) in enumerate(zip(pics, names)):
        fig = figures.heatmap_grid(img, {t: maps[i, j] for j, t in enumerate(texts)},
                                   title=f"{nm}: where each text is found",
                                   shared_scale=contrast, colorbar_label=unit if contrast else None,
                                   outline=True)
        written += figures.save_figure(fig, out / f"heatmap_{stems[i]}.png")
        if per_head:
            for j, t in enumerate(texts):
                hm = head_patch_maps(r, T[j] - (T.mean(0) if contrast else 0))
                fig = figures.heatmap_grid(img, {k: v[i] for k, v in hm.items()}, show_image=True,
                                           ncols=min(8, r.heads.shape[2] + 1), shared_scale=True,
                                           colorbar_label=unit, outline=True,
                                           title=f"{nm}: '{t}' per head and patch")
                written += figures.save_figure(fig, out / f"heads_{stems[i]}_text{j}.png")
    peaks = _peaks(maps, names, texts)
    res = {"images": names, "texts": list(texts), "figures": [str(p) for p in written],
           "maps": torch.round(maps * 1e4).div(1e4).tolist(), "peaks": peaks}
    run.echo(f"wrote {len(written)} figure(s) to {out}", err=True)
    gh, gw = maps.shape[-2:]
    lines = [f"heatmaps of {len(texts)} text(s) on {len(pics)} image(s) ({unit}); the hottest "
             f"patch (row, column of the {gh} x {gw} grid, from the top left) of each:"]
    for p in peaks:
        lines.append(f"  {p['image']}: '{p['text']}' at {tuple(p['patch'])}, {p['value']:.3f}")
    lines.append("figures: " + ", ".join(str(p) for p in written))
    run.finish(_Plain(res, "\n".join(lines)),
               method="prs", title="PRS text heatmaps",
               settings={"backbone": kw["backbone"], "texts": list(texts), "layers": layers,
                         "heads": heads},
               inputs=names,
               sections=[{"title": "Text heatmaps",
                          "text": "Each map shows, per patch, the direct contribution of the "
                                  "chosen heads towards the text (minus the mean over the texts "
                                  "when several are given).",
                          "figures": _rel(written, out)}])

# -- segment ------------------------------------------------------------------------

@prs.command("segment")
@_common
@click.option("--classes", default=None, help="Class names for the classifier: a .txt file or "
              "comma list (default: the dataset's task).")
@click.option("--task", default=None, help="Zero-shot task of the dataset (default: the one it "
              "advertises, else its labels).")
@click.option("--templates", default=None)
@click.option("--threshold", default="mean", show_default=True, help="'mean' or a number in [0,1].")
@click.option("--layers", default=None, help="Layers whose heads make the map (default all).")
@click.option("--figures", "n_figures", type=int, default=6, show_default=True,
              help="Example overlays to save with --out.")
@engine_options
def segment_cmd(classes, task, templates, threshold, layers, n_figures, run, **kw):
    """Zero-shot segmentation: threshold the predicted class's patch map; pixel accuracy,
    mIoU and mAP against the dataset's masks."""
    _start(kw, run)
    from interpcore.engine import engine_run_args, job_result

    from .spatial import segment_dataset
    from .tasks import ZeroShotTask, default_task, task_weights, templates_from

    bb = _backbone(kw)
    ds = _dataset(kw, bb=bb)
    if classes:
        names = _read_list(classes)
        t = ZeroShotTask("classes", names, names, templates_from(templates))
    else:
        name = task or default_task(ds, allow_none=True)
        if not name:
            raise InterpError(f"dataset '{kw['dataset']}' has no class names; pass --classes")
        t = ds.zeroshot_task(name, templates)
    thr = threshold if threshold == "mean" else float(threshold)
    res = segment_dataset(_decomposer(bb), ds, task_weights(bb, t), limit=_limit(kw),
                          batch_size=min(kw["batch_size"], 32), layers=_parse_layers(layers),
                          threshold=thr, out_dir=run.out, n_figures=n_figures,
                          job_dir=_job_dir(kw), names=_job_names(kw),
                          shard_size=kw.get("shard_size") or 256,
                          **engine_run_args(kw, kw.get("device", "auto")))
    _echo_job("PRS segmentation", job_result(res.job))
    figs = _rel(res.figures, run.out) if run.out is not None else []
    run.finish(res, method="prs", title=f"Zero-shot segmentation with {bb.name}",
               settings=_settings(kw, classes=t.name, threshold=threshold), inputs=[kw["dataset"]],
               sections=[{"title": "Zero-shot segmentation",
                          "text": "The predicted class's per-patch map (minus the mean over "
                                  "classes), upsampled, normalized and thresholded.",
                          "figures": figs,
                          "tables": [{"title": "Metrics", "columns": ["metric", "value"],
                                      "rows": [["pixel accuracy", round(res.pixel_accuracy, 4)],
                                               ["mIoU", round(res.miou, 4)],
                                               ["mAP", round(res.map, 4)]]}]}])

# -- spurious -----------------------------------------------------------------------

@prs.command("spurious")
@_common(dataset_help="Group-robustness dataset (default: the one the backbone advertises).")
@click.option("--heads", default=None, help="Heads to ablate: LAYER.HEAD,...")
@click.option("--heads-matching", default=None,
              help="Ablate heads whose TextSpan texts match this regular expression.")
@click.option("--match-top", type=int, default=1, show_default=True,
              help="How many of each head's first TextSpan texts are matched.")
@click.option("--textspan-layers", type=int, default=4, show_default=True,
              help="With --heads-matching: label the heads of the last k layers.")
@click.option("--pool", default=None, help="TextSpan text pool (with --heads-matching).")
@click.option("--probe", is_flag=True, help="Linear probe on the biased training split instead "
              "of the zero-shot classifier.")
@click.option("--train-limit", type=int, default=4000, show_default=True)
@click.option("--templates", default=None)
@engine_options
def spurious_cmd(heads, heads_matching, match_top, textspan_layers, pool, probe, train_limit,
                 templates, run, **kw):
    """Per-group and worst-group accuracy before / after mean-ablating heads."""
    _start(kw, run)
    from .decompose import resolve_layers
    from .spurious import parse_heads, spurious_study
    from .tasks import task_weights

    if not heads and not heads_matching:
        raise InterpError("name heads to ablate with --heads L.H,... or --heads-matching REGEX")
    bb = _backbone(kw)
    _dataset_name(kw, bb, key="spurious_dataset")
    chosen = parse_heads(heads)
    L = bb.residual_stream().num_layers
    layers = sorted(set(resolve_layers([li for li, _ in chosen], L))
                    | (set(range(max(0, L - textspan_layers), L)) if heads_matching else set()))
    ds = _dataset(kw, bb=bb)
    store = _store(kw, bb, layers=layers)
    labels_from = None
    if heads_matching:
        from .textspan import TextSpanExplainer

        ex = TextSpanExplainer(bb, pool=pool, layers=min(textspan_layers, L))
        ts = ex.explain(store, task=False)
        matched = ts.matching_heads(heads_matching, top=match_top)
        chosen += [h for h in matched if h not in chosen]
        labels_from = {f"L{h['layer']}.H{h['head']}": h["texts"][:match_top] for h in ts.heads
                       if (h["layer"], h["head"]) in matched}
        run.echo(f"heads matching '{heads_matching}': "
                 + (", ".join(f"L{li}.H{hi}" for li, hi in matched) or "none"), err=True)
    if probe:
        train = _store(kw, bb, layers=layers, split="train", limit=train_limit or None,
                       name="job-train")
        res = spurious_study(store, chosen, train_store=train, backbone=bb.name)
    else:
        t = ds.zeroshot_task("label", templates)
        res = spurious_study(store, chosen, weights=task_weights(bb, t).numpy(), backbone=bb.name)
    results = res.to_dict()
    if labels_from:
        results["matched_head_texts"] = labels_from
    run.finish(res, method="prs", title=f"Spurious-feature removal on {kw['dataset']}",
               settings=_settings(kw, heads=heads, heads_matching=heads_matching, probe=probe),
               inputs=[kw["dataset"]], results=results,
               sections=[{"title": "Accuracy per group",
                          "text": "Mean-ablating heads that encode the spurious cue should raise "
                                  "the worst group's accuracy.", "tables": [res.table()]}])

# -- search -------------------------------------------------------------------------

@prs.command("search")
@_common(quiet_names=("--quiet",))  # -q is --query here (docs/prs.md)
@click.option("--heads", required=True, help="Heads whose space to search in: LAYER.HEAD,...")
@click.option("-q", "--query", type=int, default=0, show_default=True, help="Query image (row).")
@click.option("-k", type=int, default=8, show_default=True)
@engine_options
def search_cmd(heads, query, k, run, **kw):
    """Nearest-neighbour images of a query in the space of chosen heads."""
    _start(kw, run)
    from .decompose import resolve_layers
    from .search import nearest
    from .spurious import parse_heads

    bb = _backbone(kw)
    chosen = parse_heads(heads)
    L = bb.residual_stream().num_layers
    _dataset_name(kw, bb)
    store = _store(kw, bb, layers=resolve_layers([li for li, _ in chosen], L))
    res = nearest(store, chosen, query, k=k)
    figs = []
    if run.out is not None:
        from interpcore import figures

        rows = [res.query] + [nb["row"] for nb in res.neighbours]
        ds = _dataset(kw, bb=bb)
        imgs = [ds[int(store.samples[r].get("index", r))]["image"] for r in rows]
        titles = ["query"] + [f"{nb['similarity']:.4f}" for nb in res.neighbours]
        fig = figures.image_grid(imgs, titles=titles, title=f"neighbours in the space of {heads}")
        figs = _rel(figures.save_figure(fig, run.out / "neighbours.png"), run.out)
        res.figure = figs[0]
    run.finish(res, method="prs", title=f"Head-space image search ({heads})",
               settings=_settings(kw, heads=heads, query=query, k=k), inputs=[kw["dataset"]],
               sections=[{"title": "Nearest neighbours", "text": "The query and its nearest "
                          "images by cosine similarity of the chosen heads' contributions.",
                          "figures": figs}])


class _Plain:
    def __init__(self, data, text):
        self.data, self.text = data, text

    def to_dict(self):
        return self.data

    def to_json(self):
        return json.dumps(self.data, indent=2, default=str)

    def __str__(self):
        return self.text


def _default_texts(bb, dataset=None):
    """The classes of the default zero-shot task of ``dataset`` (else of the dataset the
    backbone advertises), each put into the task's first template."""
    import interpcore

    name = dataset or interpcore.default_for("dataset", bb)
    if name is None:
        raise InterpError("name the texts to map with --text (repeatable)")
    ds = interpcore.get_dataset(name)
    tasks = ds.zeroshot_tasks()
    if not tasks:
        raise InterpError(f"dataset '{name}' has no class names: name the texts to map with "
                          "--text (repeatable)")
    t = ds.zeroshot_task()
    return [t.templates[0].replace("{}", n) for n in t.prompt_names]


def _decomposer(bb):
    from .decompose import PRSDecomposer

    return PRSDecomposer(bb)


def _read_list(spec) -> list[str]:
    p = Path(spec)
    if p.is_file():
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [s.strip() for s in str(spec).split(",") if s.strip()]


def _images(paths, dataset, indices, bb=None):
    from interpcore.torch_backbone import load_image

    if paths:
        return [load_image(p) for p in paths], [str(p) for p in paths]
    import interpcore

    dataset = dataset or interpcore.default_for("dataset", bb)
    if dataset is None:
        raise InterpError("give IMAGES, or a --dataset to take them from")
    ds = interpcore.get_dataset(dataset)
    idx = list(indices) or [0]
    return [ds[i]["image"] for i in idx], [f"{getattr(ds, 'name', 'dataset')}[{i}]" for i in idx]


def _store_summary(store):
    import numpy as np

    total = store.embed + store.attn.sum(1) + store.mlps.sum(1) + store.ln_bias
    unit = store.embedding / np.linalg.norm(store.embedding, axis=1, keepdims=True)
    err = float(np.abs(total - unit).max())
    data = {"store": str(store.path), "images": len(store), "head_layers": store.head_layers,
            "max_abs_error_of_sum": err,
            "mean_norm": {"attn": np.linalg.norm(store.attn, axis=-1).mean(0).round(5).tolist(),
                          "mlps": np.linalg.norm(store.mlps, axis=-1).mean(0).round(5).tolist()}}
    lines = [f"PRS store of {len(store)} images at {store.path}",
             f"  sum of contributions vs unit embedding: max abs error {err:.2e}"]
    for i, (a, m) in enumerate(zip(data["mean_norm"]["attn"], data["mean_norm"]["mlps"])):
        lines.append(f"    layer {i:2d}: attention {a:.4f}  mlp {m:.4f}")
    return _Plain(data, "\n".join(lines))


def _layer_table(res):
    d = res.to_dict()
    mn = d.get("mean_norm", {})
    rows = [[i, a, m] for i, (a, m) in enumerate(zip(mn.get("attn", []), mn.get("mlps", [])))]
    return {"title": "Mean |contribution| per layer", "columns": ["layer", "attention", "mlp"], "rows": rows}


def _textspan_figure(res, path):
    from interpcore import figures

    return figures.save_figure(res.figure(), path)[0]
