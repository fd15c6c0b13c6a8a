"""``interp splice decompose|classes|dataset``: the reference SpLiCE scripts as commands.

No torch import at module level (``interp --help`` must stay fast): everything heavy is
imported inside the command bodies.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from interpcore.commands import backbone_options, batch_size_option, output_options
from interpcore.engine import engine_options
from interpcore.errors import InterpError

#: The reference scripts' dataset names -> interpcore dataset names.
SEED_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenetval": "imagenet-val",
                 "imagenet_val": "imagenet-val", "waterbirds": "waterbirds",
                 "imagenet": "imagenet"}


def _model_options(f):
    opts = [
        backbone_options("vision-language", names=("-b", "--backbone", "--model"),
                         help="Backbone 'library:model' (image and text encoders), e.g. "
                              "open_clip:ViT-B-32."),
        click.option("-v", "--vocabulary", "--vocab", default=None,
                     help="Concept vocabulary: a name (see 'interp vocabularies list') or a .txt "
                          "file. Default: the one the backbone advertises, else laion."),
        click.option("--vocabulary-size", "--vocab-size", type=int, default=None,
                     help="Keep the k most frequent concepts (default, or -1: all)."),
        click.option("-l", "--l1-penalty", "--l1", type=float, default=0.25, show_default=True,
                     help="Sparsity penalty: larger gives fewer concepts."),
        click.option("--solver", default="active_set", show_default=True,
                     type=click.Choice(["active_set", "sklearn", "admm"]),
                     help="active_set: fast, certified to 1e-6 relative; sklearn: the reference's."),
        click.option("--image-mean", default=None, type=click.Path(dir_okay=False),
                     help="Image mean file (.pt/.safetensors/.npy) instead of the default one."),
        click.option("--mean-dataset", default=None,
                     help="Compute the image mean over this dataset instead (its train split)."),
        click.option("--templates", default=None,
                     help="Prompt template for the concepts, e.g. 'a photo of {}' (default: none)."),
        batch_size_option(),
        output_options(out_names=("--out", "--out-path")),
        click.option("--verbose", is_flag=True, help="Also print solver statistics."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _data_options(f):
    opts = [
        click.option("-d", "--dataset", default=None, show_default="the dataset the backbone "
                     "advertises",
                     help="Dataset name (see 'interp datasets list'; the reference's CIFAR10, "
                          "CIFAR100, ImageNetVal, Waterbirds work too) or an image folder."),
        click.option("--split", default="test", show_default=True),
        click.option("--root", "--data-path", "root", default=None,
                     help="Dataset root folder or file (datasets on disk need one)."),
        click.option("-n", "--limit", type=int, default=None, help="Use only the first N images."),
        click.option("--plot-topk", type=int, default=10, show_default=True,
                     help="Concepts shown in each bar plot."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.group()
def splice():
    """SpLiCE: explain CLIP image embeddings as sparse nonnegative mixes of words.

    \b
    interp splice decompose examples/red_circle.png
    interp splice classes --class-label circle --out runs/circles
    interp splice dataset --compare NAME --out runs/shift
    """


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _check_common(kw):
    if kw["l1_penalty"] < 0:
        raise InterpError(f"--l1-penalty must be >= 0, got {kw['l1_penalty']}")
    if kw["vocabulary_size"] is not None and (kw["vocabulary_size"] == 0 or kw["vocabulary_size"] < -1):
        raise InterpError("--vocabulary-size must be at least 1 (omit it, or give -1, for the whole "
                          f"vocabulary), got {kw['vocabulary_size']}")
    if kw.get("limit") is not None and kw["limit"] < 1:
        raise InterpError(f"--limit must be at least 1, got {kw['limit']}")
    if kw.get("plot_topk") is not None and kw["plot_topk"] < 1:
        raise InterpError(f"--plot-topk must be at least 1, got {kw['plot_topk']}")


def _start(kw, run):
    """Check the options and fill what the run needs: ``kw["out"]`` (the user's --out, which
    the engine uses for its job folder) and the default dataset, read from what the
    backbone's family advertises (no model is loaded for that)."""
    _check_common(kw)
    kw["out"] = str(run.user_out) if run.user_out is not None else None
    kw["as_json"] = run.as_json
    if "dataset" in kw and kw["dataset"] is None:
        from interpcore import default_for

        from .model import family_defaults

        kw["dataset"] = default_for("dataset", family_defaults(kw["backbone"]))
        if kw["dataset"] is None:
            raise InterpError(f"backbone '{kw['backbone']}' advertises no default dataset; "
                              "name one with -d/--dataset")


def _decomposer(kw):
    from interpcore import get_backbone

    from .model import SpliceDecomposer

    backbone = get_backbone(kw["backbone"], pretrained=kw["pretrained"], device=kw["device"])
    size = kw["vocabulary_size"] if kw["vocabulary_size"] != -1 else None
    return SpliceDecomposer(
        backbone, vocabulary=kw["vocabulary"], vocabulary_size=size,
        l1_penalty=kw["l1_penalty"], solver=kw["solver"], templates=kw["templates"],
        image_mean=kw["image_mean"], mean_dataset=kw["mean_dataset"],
        batch_size=kw["batch_size"],
    )


def _dataset(name, split, root, limit=None):
    from interpcore import get_dataset, list_datasets

    opts = {}
    if root:
        opts["root"] = root
    key = name
    if name not in list_datasets():
        alias = SEED_DATASETS.get(name.lower().replace("-", ""))
        if alias is None and Path(name).is_dir():
            alias, opts["root"] = "imagefolder", name
        key = alias or name
    return key, get_dataset(key, split=split, **opts)


def _job_dir(kw, suffix: str = ""):
    """Where the command's engine job lives: ``--job-dir`` (a folder or an fsspec URL), else
    ``OUT/job``, else ``None`` (the user cache, named by the job's hash); ``suffix`` tells
    the --compare dataset's job apart."""
    if kw.get("job_dir"):
        return str(kw["job_dir"]) + suffix
    if kw.get("out"):
        return str(Path(kw["out"]) / f"job{suffix}")
    return None


def _decompose_data(kw, name, ds, *, target=None, by_class=False, dec=None, compare=False):
    """The dataset decomposition as a sharded, resumable engine job (``--engine``, default
    local; see docs/scaling.md and :mod:`interp_splice.engine_job`): a rerun reuses the
    finished job, a killed one computes only its missing shards."""
    from interpcore.engine import engine_run_args

    dec = dec or _decomposer(kw)
    opts = dict(limit=kw["limit"], batch_size=kw["batch_size"], name=name,
                job_dir=_job_dir(kw, "-compare" if compare else ""),
                shard_size=kw.get("shard_size") or 256, **engine_run_args(kw, kw["device"]))
    if by_class or target is not None:
        res = dec.decompose_classes(ds, target_label=target, **opts)
    else:
        res = dec.decompose_dataset(ds, **opts)
    return res, dec


def _job_sections(run, *results) -> list:
    """run.json sections describing the engine jobs the results were read from."""
    if run.out is None:
        return []
    from interpcore.engine import run_section

    return [{**run_section(r.job), "title": f"Job outputs ({r.dataset})"}
            for r in results if getattr(r, "job", None) is not None]


def _settings(kw, **extra):
    keys = ("backbone", "pretrained", "vocabulary", "vocabulary_size", "l1_penalty", "solver",
            "image_mean", "mean_dataset", "templates")
    out = {k: kw.get(k) for k in keys}
    out.update(extra)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "item"


def _input_copy(image, path: Path, side: int = 256) -> Path:
    """The input image as the report shows it (at most ``side`` pixels a side; small
    images, such as 32 x 32 renders, are scaled up without smoothing, so they stay sharp)."""
    from PIL import Image

    from interpcore.cache import atomic_path
    from interpcore.torch_backbone import load_image

    im = load_image(image)
    scale = side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im = im.resize(size, Image.NEAREST if scale > 1 else Image.LANCZOS)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def _bar(path: Path, top, title: str):
    from interpcore import figures

    labels = [c for c, _ in top]
    values = [w for _, w in top]
    fig = figures.bar_chart(labels, values, title=title, xlabel="weight", sort=False)
    return figures.save_figure(fig, path)[0]


def _solver_line(model) -> str:
    info = model.last_info
    if info is None:
        return ""
    gap = ""
    if info.gap is not None:
        rel = (info.gap / info.objective.clamp_min(1e-300)).max()
        gap = f", largest relative duality gap {float(rel):.2e}"
    return (f"solver {info.solver}: {info.seconds * 1000:.1f} ms, {info.rounds} round(s), "
            f"{info.full_products} full product(s){gap}")


# ------------------------------------------------------------------------------------------
# decompose
# ------------------------------------------------------------------------------------------


@splice.command("decompose")
@click.argument("images", nargs=-1, required=True)
@click.option("--topk", type=int, default=None, help="Print only the k largest concepts per image.")
@_model_options
def decompose_cmd(images, topk, run, **kw):
    """Decompose IMAGES into sparse weights over the vocabulary's concepts.

    Prints, per image, the reference script's report: "Concept Decomposition of IMAGE:",
    one line per nonzero concept (largest weight first), the L0 norm and the cosine
    similarity between the CLIP embedding and its SpLiCE reconstruction.
    """
    _start(kw, run)
    if topk is not None and topk < 1:
        raise InterpError(f"--topk must be at least 1, got {topk}")
    for p in images:
        if not Path(p).exists():
            raise InterpError(f"image file not found: {p}")
        if Path(p).is_dir():
            raise InterpError(f"{p} is a folder; give image files (or use 'interp splice dataset --dataset {p}')")
    dec = _decomposer(kw)
    result = dec.decompose(list(images))
    sections = []
    if run.out is not None:
        for i, name in enumerate(result.images):
            stem = _slug(Path(name).stem)
            txt = run.out / f"{stem}_weights.txt"
            from interpcore.cache import write_text

            write_text(txt, result.format(i) + "\n")
            png = _bar(run.out / f"{stem}_concepts.png", result.top(i, 20),
                       f"SpLiCE concepts of {Path(name).name}")
            shown = _input_copy(name, run.out / f"{stem}_input.png")
            rows = [[c, round(w, 4)] for c, w in result.top(i)]
            sections.append({
                "title": Path(name).name,
                "text": (f"The image's CLIP embedding, centred with the image mean, written as a "
                         f"sparse nonnegative mix of {len(result.concepts)} concept embeddings "
                         f"(l1 penalty {result.l1_penalty}). Longer bars: concepts that carry more "
                         f"of the embedding. L0 = {int(result.l0[i])} concepts; cosine between the "
                         f"CLIP embedding and its SpLiCE reconstruction = {float(result.cosine[i]):.4f}."),
                "figures": [shown.name, png.name],
                "tables": [{"title": "Nonzero concepts", "columns": ["concept", "weight"], "rows": rows}],
            })
    data = result.to_dict()
    if kw["verbose"] and dec.model.last_info is not None:
        data["solver_stats"] = {"rounds": dec.model.last_info.rounds,
                                "full_products": dec.model.last_info.full_products}
    lines = [result.format(i, topk=topk) for i in range(len(result))]
    if kw["verbose"]:
        lines.append(_solver_line(dec.model))
    run.finish(result, text="\n".join(lines), data=data, results=result.to_dict(),
               method="splice", title=f"SpLiCE decomposition of {len(result)} image(s)",
               settings=_settings(kw, vocabulary=result.vocabulary), inputs=list(images),
               sections=sections)


# ------------------------------------------------------------------------------------------
# classes and datasets
# ------------------------------------------------------------------------------------------


def _parse_label(label, classes):
    if label is None:
        return None
    if re.fullmatch(r"-?\d+", str(label)):
        return int(label)
    return str(label)


@splice.command("classes")
@click.option("--class-label", default=None,
              help="Only this class (index or name); default: every class.")
@_data_options
@_model_options
@engine_options
def classes_cmd(class_label, run, **kw):
    """Per-class concept distributions: the mean SpLiCE weights of each class's images,
    with a bar plot PNG of its top concepts (--plot-topk) per class."""
    _start(kw, run)
    name, ds = _dataset(kw["dataset"], kw["split"], kw["root"])
    target = _parse_label(class_label, getattr(ds, "classes", None))
    res, _ = _decompose_data(kw, name, ds, target=target, by_class=True)
    sections = []
    if run.out is not None:
        for lab, cname in res.class_names.items():
            top = res.top(kw["plot_topk"], label=lab)
            png = _bar(run.out / f"class_{_slug(cname)}.png", top,
                       f"{name} class {cname} decomposition")
            near = res.class_concept_cosine.get(lab)
            columns, rows = ["concept", "mean weight"], [[c, round(w, 4)] for c, w in top]
            if near is not None:
                index = {c: j for j, c in enumerate(res.concepts)}
                columns.append("cosine with the class's mean embedding")
                rows = [r + [round(float(near[index[r[0]]]), 3)] for r in rows]
            sections.append({
                "title": f"Class {cname}",
                "text": (f"Mean SpLiCE weights over the {res.class_counts[lab]} '{cname}' image(s) "
                         f"of {name} ({kw['split']} split): the concepts this class's embeddings "
                         f"are made of, top {kw['plot_topk']} shown. Average L0 "
                         f"{res.class_l0[lab]:.2f}, average cosine {res.class_cosine[lab]:.4f}. "
                         "A word can lead the weights although others are closer to the class's "
                         "mean embedding (last column) when many of the class's images also "
                         "lie near it."),
                "figures": [png.name],
                "tables": [{"title": "Top concepts", "columns": columns, "rows": rows}],
            })
    sections += _job_sections(run, res)
    lines = [res.format(lab, topk=kw["plot_topk"] if not kw["verbose"] else None)
             for lab in res.class_weights]
    if len(res.class_weights) > 1:
        lines.append(f"All {res.count} images: Average Decomposition L0 Norm: \t{res.mean_l0}")
        lines.append(f"All {res.count} images: Average CLIP, SpLiCE Cosine Sim: \t"
                     f"{round(res.mean_cosine, 4)}")
    run.finish(res, text="\n".join(lines), data=res.to_dict(), results=res.to_dict(topk=50),
               method="splice", title=f"SpLiCE class decompositions of {name}",
               settings=_settings(kw, dataset=name, split=kw["split"], limit=kw["limit"],
                                  class_label=class_label, vocabulary=res.vocabulary),
               inputs=[name], sections=sections)


@splice.command("dataset")
@click.option("--compare", default=None,
              help="A second dataset to decompose with the same model and plot side by side.")
@click.option("--compare-split", default=None, help="Split of --compare (default: --split).")
@click.option("--compare-root", default=None, help="Root of --compare (default: --root).")
@_data_options
@_model_options
@engine_options
def dataset_cmd(compare, compare_split, compare_root, run, **kw):
    """Whole-dataset decomposition: the mean SpLiCE weights over all images, average L0
    and cosine; with --compare, a side-by-side plot of two datasets' concept distributions
    (e.g. to spot a distribution shift)."""
    _start(kw, run)
    name, ds = _dataset(kw["dataset"], kw["split"], kw["root"])
    res, dec = _decompose_data(kw, name, ds)
    res2 = name2 = None
    if compare:
        split2, root2 = compare_split or kw["split"], compare_root or kw["root"]
        name2, ds2 = _dataset(compare, split2, root2)
        kw2 = {**kw, "dataset": compare, "split": split2, "root": root2}
        res2, _ = _decompose_data(kw2, name2, ds2, dec=dec, compare=True)
    label1, label2 = f"{name} ({kw['split']})", None
    if res2 is not None:
        label2 = f"{name2} ({split2})"
        res.dataset, res2.dataset = (label1, label2) if name2 == name else (name, name2)
    sections = []
    k = kw["plot_topk"]
    if run.out is not None:
        top = res.top(k)
        png = _bar(run.out / f"dataset_{_slug(name)}.png", top, f"{label1} decomposition")
        sections.append({
            "title": label1,
            "text": (f"Mean SpLiCE weights over {res.count} image(s): the concepts the dataset's "
                     f"image embeddings are made of, top {k} shown. Average L0 {res.mean_l0:.2f}, "
                     f"average cosine {res.mean_cosine:.4f}."),
            "figures": [png.name],
            "tables": [{"title": "Top concepts", "columns": ["concept", "mean weight"],
                        "rows": [[c, round(w, 4)] for c, w in top]}],
        })
        if res2 is not None:
            from interpcore import figures

            idx = (res.mean_weights + res2.mean_weights).argsort(descending=True)[:k].tolist()
            labels = [res.concepts[i] for i in idx]
            fig = figures.compare_bars(labels, {label1: [float(res.mean_weights[i]) for i in idx],
                                                label2: [float(res2.mean_weights[i]) for i in idx]},
                                       title=f"{label1} vs {label2}", xlabel="mean weight")
            cpng = figures.save_figure(fig, run.out / "compare.png")[0]
            rows = [[res.concepts[i], round(float(res.mean_weights[i]), 4),
                     round(float(res2.mean_weights[i]), 4)] for i in idx]
            sections.append({
                "title": f"{label1} vs {label2}",
                "text": ("The concepts with the largest mean weight in either dataset, side by "
                         "side: a concept much heavier in one dataset marks a difference between "
                         f"them. {label2}: {res2.count} image(s), average L0 {res2.mean_l0:.2f}, "
                         f"average cosine {res2.mean_cosine:.4f}."),
                "figures": [cpng.name],
                "tables": [{"title": "Mean weights", "columns": ["concept", label1, label2], "rows": rows}],
            })
    sections += _job_sections(run, res, res2)
    data = None
    if run.as_json:  # the full weights: only built when printed
        data = res.to_dict(topk=None)
        data.pop("classes", None)
        if res2 is not None:
            d2 = res2.to_dict(topk=None)
            d2.pop("classes", None)
            data = {"dataset": data, "compare": d2}
    lines = [res.format(topk=None if kw["verbose"] else k)]
    if res2 is not None:
        lines += [f"-- {label2} --", res2.format(topk=None if kw["verbose"] else k)]
    results = {"dataset": res.to_dict(topk=100)}
    if res2 is not None:
        results["compare"] = res2.to_dict(topk=100)
    run.finish(res, text="\n".join(lines), data=data if data is not None else results,
               results=results, method="splice",
               title=f"SpLiCE decomposition of {name}" + (f" vs {name2}" if name2 else ""),
               settings=_settings(kw, dataset=name, split=kw["split"], limit=kw["limit"],
                                  compare=name2, vocabulary=res.vocabulary),
               inputs=[name] + ([name2] if name2 else []), sections=sections)
