"""``interp neurons explain | ablate | segment | find``: the second-order lens on MLP neurons.

Only click and the core at module level: torch and the method are imported inside the
command bodies so that ``interp --help`` stays fast.
"""

from __future__ import annotations

import click

from interpcore.commands import backbone_options, batch_size_option, output_options
from interpcore.engine import engine_options, engine_requested


@click.group()
def neurons():
    """Second-order effects of a CLIP ViT's MLP neurons (Gandelsman, Efros and Steinhardt,
    ICLR 2025): effects, sparsity, text decompositions, mean-ablation, concept search."""


def _layers(text):
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        import interpcore

        raise interpcore.InterpError(f"--layers takes comma-separated layer numbers, got '{text}'") from None


def _lens_options(f):
    opts = [backbone_options("vision-language"),
            click.option("--layers", default=None, help="Source layers, e.g. 0,1,2 (default: all but the last)."),
            click.option("--vocabulary", "-V", default=None,
                         show_default="the one the dataset or backbone advertises",
                         help="Texts for the decompositions: a name, or a file (one per line)."),
            click.option("--l1", "l1_penalty", type=float, default=0.1, show_default=True,
                         help="SpLiCE's sparsity penalty for the decompositions."),
            click.option("--dataset", "-d", default=None, show_default="the one the backbone advertises",
                         help="Probe dataset."),
            click.option("--split", default="test", show_default=True),
            click.option("--limit", type=int, default=None, help="Use only the first N probe images."),
            batch_size_option()]
    for o in reversed(opts):
        f = o(f)
    return f


def _setup(backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset, split, batch_size):
    import interpcore

    bb = interpcore.get_backbone(backbone, pretrained=pretrained, device=device)
    lens = interpcore.get_explainer("neurons", bb, layers=_layers(layers), vocabulary=vocabulary,
                                    l1_penalty=l1_penalty, batch_size=batch_size)
    name = dataset or interpcore.default_for("dataset", bb)
    if name is None:
        raise interpcore.InterpError(f"backbone '{bb.name}' advertises no probe dataset; name one with --dataset")
    return lens, interpcore.get_dataset(name, split=split), name


def _load(folder):
    from .lens import NeuronsResult

    return NeuronsResult.load(folder)


def _same(res, backbone):
    if res.backbone != backbone:
        import interpcore

        raise interpcore.InterpError(f"the result was computed on {res.backbone}, not {backbone}; "
                                     f"pass -b {res.backbone}")


def _figure(run, res, name):
    if run.out is None:
        return []
    from interpcore.figures import save_figure

    run.out.mkdir(parents=True, exist_ok=True)
    save_figure(res.figure(), run.file(name))
    return [name]


@neurons.command("explain")
@_lens_options
@output_options()
@engine_options  # the per-image effects as a sharded, resumable job (engine_job.py)
def explain(backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset, split, limit, batch_size, run,
            **engine_kw):
    """Effects, sparsity and text decompositions of the neurons over a probe dataset
    (--out keeps the result in OUT/result for 'ablate' and 'find')."""
    lens, ds, name = _setup(backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset, split, batch_size)
    job = None
    if engine_requested(engine_kw):
        job = _job(engine_kw, name, lens, run.out, "batch_arrays", None, backbone=backbone, pretrained=pretrained,
                   device=device, split=split, limit=limit, batch_size=batch_size)
        res = lens.explain_job(job.out_dir, ds)
    else:
        res = lens.explain(ds, limit=limit)
    figures = _figure(run, res, "neurons.png")
    if run.out is not None:
        res.save(run.file("result"))
    rows = [[f"L{l}.N{n}", f"{float(res.mean_norm[res.layers.index(l)][n]):.3g}",
             f"{float(res.sparsity[res.layers.index(l)][n]):.3f}",
             ", ".join(f"{t} {w:.2f}" for t, w in res.texts[res.layers.index(l)][n])] for l, n in res.top(50)]
    sections = [{"title": "Neurons with the largest second-order effect",
                 "text": "Mean norm of each neuron's second-order effect on the representation, its sparsity "
                         "(fraction of images carrying 90% of the squared effect) and the sparse text "
                         f"decomposition of its principal direction ({res.vocabulary}). {res.verification}.",
                 "figures": figures,
                 "tables": [{"title": "top neurons", "columns": ["neuron", "mean norm", "sparsity", "texts"],
                             "rows": rows}]}]
    if job is not None:
        sections.append(_job_section(job))
    data = {k: v for k, v in res.to_dict().items() if k not in ("directions", "mean_effects")}
    run.finish(res, data=data, method="neurons", title=f"Second-order neurons: {res.backbone}", sections=sections,
               settings={"layers": res.layers, "vocabulary": res.vocabulary, "l1_penalty": l1_penalty},
               inputs=[ds.name])


def _selected(res, match, neuron):
    import interpcore

    picked = set()
    for text in neuron:
        try:
            layer, n = text.upper().lstrip("L").split(".N")
            picked.add((int(layer), int(n)))
        except ValueError:
            raise interpcore.InterpError(f"--neuron takes LAYER.NINDEX such as L2.N17, got '{text}'") from None
    words = [w.lower() for w in match]
    picked |= set(res.labelled(lambda t: any(w in t.lower() for w in words))) if words else set()
    if not picked:
        raise interpcore.InterpError("no neuron selected: give --match WORD (first texts containing it) or "
                                     "--neuron L2.N17")
    return sorted(picked)


def _job(engine_kw, dataset, lens, out, verb, options, **command_kw):
    """Run (or resume) one of the lens's dataset jobs (engine_job.py) for a command."""
    from . import engine_job

    kw = dict(engine_kw, **command_kw)
    return engine_job.run(kw, dataset, lens.layers, out, verb, options, lens)


def _job_section(job):
    return {"title": f"Dataset job {job.spec_hash}", "text": str(job)}


def _from_option(required=True):
    return click.option("--from", "source", required=required, type=click.Path(file_okay=False, exists=True),
                        help="The result folder of 'interp neurons explain --out' (OUT/result)"
                             + ("." if required else "; without it the statistics are computed here, "
                                                     "as explain's dataset job."))


@neurons.command("ablate")
@_from_option()
@click.option("--match", multiple=True, help="Ablate the neurons whose first text contains this word (repeatable).")
@click.option("--neuron", multiple=True, help="Ablate this neuron, e.g. L2.N17 (repeatable).")
@click.option("--task", "tasks", multiple=True, help="Zero-shot task of the dataset (default: all it offers).")
@click.option("--how", type=click.Choice(["second-order", "activation"]), default="second-order", show_default=True,
              help="Replace the neurons' second-order effects by their means, or their activations in the "
                   "forward pass (every order of their contribution).")
@_lens_options
@output_options()
@engine_options  # each image's representation before and after: a sharded, resumable job (engine_job.py)
def ablate(source, match, neuron, tasks, how, backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset,
           split, limit, batch_size, run, **engine_kw):
    """Zero-shot accuracy per task before and after mean-ablating neurons (their second-order
    effects, or with --how activation their activations)."""
    res = _load(source)
    _same(res, backbone)
    lens, ds, name = _setup(backbone, pretrained, device,
                            layers or ",".join(map(str, res.layers)), vocabulary, l1_penalty, dataset, split,
                            batch_size)
    picked = _selected(res, match, neuron)
    options = lens.ablation_options(res, picked, how.replace("-", "_"))
    names = lens.ablation_tasks(ds, list(tasks) or None)
    job = _job(engine_kw, name, lens, run.out, "ablation_arrays", options, backbone=backbone, pretrained=pretrained,
               device=device, split=split, limit=limit, batch_size=batch_size)
    ab = lens.ablation_result(ds, names, options, job.load("representation"), job.load("ablated"))
    figures = _figure(run, ab, "ablation.png")
    sections = [{"title": "Mean-ablation", "figures": figures,
                 "text": f"{len(picked)} neurons' " + ("activations" if how == "activation" else "second-order effects")
                         + " replaced by their means.",
                 "tables": [{"title": "zero-shot accuracy (%)", "columns": ["task", "before", "after"],
                             "rows": [[t, f"{ab.before[t]:.2f}", f"{ab.after[t]:.2f}"] for t in ab.before]}]},
                _job_section(job)]
    run.finish(ab, method="neurons", title=f"Neuron ablation: {ab.backbone}", sections=sections,
               settings={"match": list(match), "neuron": list(neuron), "how": how}, inputs=[ds.name])


@neurons.command("segment")
@_from_option()
@click.option("--task", default=None, help="Zero-shot task that picks each image's class (default: label).")
@click.option("-k", "k", type=int, default=50, show_default=True, help="Neurons per class.")
@click.option("--seg-layers", default=None, help="Layers the neurons come from (default: the result's last).")
@_lens_options
@output_options()
@engine_options  # each image's prediction and patch maps: a sharded, resumable job (engine_job.py)
def segment(source, task, k, seg_layers, backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset,
            split, limit, batch_size, run, **engine_kw):
    """Zero-shot segmentation from the activation maps of the neurons whose directions project
    most on each image's class, scored against the dataset's masks (with random neurons for
    scale)."""
    res = _load(source)
    _same(res, backbone)
    lens, ds, name = _setup(backbone, pretrained, device,
                            layers or ",".join(map(str, res.layers)), vocabulary, l1_penalty, dataset, split,
                            batch_size)
    options = lens.segment_options(res, ds, task=task, k=k, layers=_layers(seg_layers))
    keep = lens.masked(ds, len(ds) if limit is None else min(limit, len(ds)))
    job = _job(engine_kw, name, lens, run.out, "segment_arrays", options, backbone=backbone, pretrained=pretrained,
               device=device, split=split, limit=limit, batch_size=batch_size)
    seg = lens.segment_result(ds, options, keep, *(job.load(a)[keep] for a in ("text_map", "random_map")))
    figures = _figure(run, seg, "segmentation.png")
    run.finish(seg, method="neurons", title=f"Neuron segmentation: {seg.backbone}",
               sections=[{"title": "Segmentation", "text": str(seg), "figures": figures}, _job_section(job)],
               settings={"task": seg.task, "k": seg.k, "layers": seg.layers}, inputs=[ds.name])


@neurons.command("find")
@click.argument("text")
@_from_option(required=False)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neurons to list.")
@_lens_options
@output_options(out=False, report=False)
@engine_options  # without --from: explain's per-image effects as a sharded, resumable job (engine_job.py)
def find(text, source, k, backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset, split, limit,
         batch_size, run, **engine_kw):
    """The neurons whose principal direction is closest to TEXT's embedding (from an explain
    result, or without --from from the probe dataset's statistics, computed as a job)."""
    import interpcore

    if source is not None:
        res = _load(source)
        _same(res, backbone)
        bb = interpcore.get_backbone(backbone, pretrained=pretrained, device=device)
        lens = interpcore.get_explainer("neurons", bb, layers=res.layers)
    else:
        lens, ds, name = _setup(backbone, pretrained, device, layers, vocabulary, l1_penalty, dataset, split,
                                batch_size)
        job = _job(engine_kw, name, lens, None, "batch_arrays", None, backbone=backbone, pretrained=pretrained,
                   device=device, split=split, limit=limit, batch_size=batch_size)
        res = lens.explain_job(job.out_dir, ds)
    hits = lens.find(res, text, k)
    lines = [f"neurons closest to '{text}':"] + [f"  L{l}.N{n:<5} cosine {c:.3f}  first text: {res.label(l, n)}"
                                                 for l, n, c in hits]
    run.finish(None, text="\n".join(lines),
               data=[{"layer": l, "neuron": n, "cosine": c, "label": res.label(l, n)} for l, n, c in hits])
