"""``interp shapes ...``: generate images, print model quality, retrain the models, check the
methods against the world's ground truth.

Only click and the core at module level; numpy / PIL / torch are imported inside commands.
"""

from __future__ import annotations

import json

import click

from interpcore import InterpError


@click.group()
def shapes():
    """The synthetic shapes world: generate images, check model quality, retrain, check the
    methods against its ground truth."""


@shapes.command()
@click.option("--n", "n", type=int, default=16, show_default=True, help="number of images")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="output folder (PNGs, masks, captions.json)")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--one-object-prob", type=float, default=0.7, show_default=True)
@click.option("--spurious", is_flag=True, help="draw from shapes-spurious instead of shapes")
@click.option("--scale", type=int, default=1, show_default=True,
              help="upscale the PNGs by this factor (nearest neighbour) for viewing")
@click.option("--examples", is_flag=True,
              help="write the README's example images (examples/*.png) instead of N samples")
def generate(n, out, split, seed, one_object_prob, spurious, scale, examples):
    """Write N images of the world as PNGs, with per-object masks and captions.

    \b
    OUT/000000.png        the image (32 x 32)
    OUT/000000_mask.png   mask: 0 = background, k = object k (grey level k)
    OUT/captions.json     [{"file", "mask", "caption", "attributes", ...}, ...]
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from interpcore.cache import write_text
    from interpcore.progress import progress

    from .datasets import ShapesDataset, SpuriousShapesDataset

    if n < 0:
        raise InterpError(f"--n must be >= 0, got {n}")
    if scale < 1:
        raise InterpError(f"--scale must be >= 1, got {scale}")
    if examples:
        from . import world

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, (img, _mask) in world.render_examples().items():
            im = Image.fromarray(img)
            if scale > 1:
                im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
            im.save(out / f"{name}.png")
        click.echo(f"wrote {len(world.example_scenes())} example images to {out}")
        return
    ds = (SpuriousShapesDataset(split, n=n, seed=seed) if spurious
          else ShapesDataset(split, n=n, seed=seed, one_object_prob=one_object_prob))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in progress(range(n), desc="generating", unit="img"):
        s = ds[i]
        name = f"{i:06d}.png"
        img = s["image"]
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        img.save(out / name)
        Image.fromarray(s["mask"].astype(np.uint8)).save(out / f"{i:06d}_mask.png")
        rec = {"file": name, "mask": f"{i:06d}_mask.png", "caption": s["caption"],
               "label": s.get("label"), "attributes": s["attributes"]}
        if "group" in s:
            rec["group"] = s["group"]
        records.append(rec)
    write_text(out / "captions.json", json.dumps(
        {"dataset": ds.name, "split": split, "seed": seed, "samples": records}, indent=2))
    click.echo(f"wrote {n} images, masks and captions.json to {out}")


@shapes.command()
@click.option("--n", "n", type=int, default=1000, show_default=True,
              help="held-out images per evaluation")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--clip", "clip_weights", default=None, help="CLIP weights file or folder (default: shipped)")
@click.option("--resnet", "resnet_weights", default=None, help="ResNet weights file or folder (default: shipped)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def quality(n, split, device, clip_weights, resnet_weights, as_json):
    """Zero-shot accuracy of shapes:clip-vit, test accuracy of shapes:resnet, and the
    shapes-spurious per-group / worst-group accuracy, on held-out images."""
    from .quality import format_table, measure

    if n <= 0:
        raise InterpError(f"--n must be > 0, got {n}")
    result = measure(n=n, split=split, device=device, clip=clip_weights, resnet=resnet_weights)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_table(result))


@shapes.command(context_settings={"ignore_unknown_options": False})
@click.argument("model", type=click.Choice(["clip", "resnet"]))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="output folder for the weights and JSON records")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="training steps (default: the recorded recipe)")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--threads", type=int, default=None, help="torch CPU threads")
@click.option("--eval-n", type=int, default=None, help="held-out images for the final metrics")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda")
def train(model, out, seed, steps, batch_size, lr, threads, eval_n, device):
    """Retrain a shapes model (same as python -m interp_shapes.train)."""
    from . import train as trainer

    kw = dict(seed=seed, steps=steps, batch_size=batch_size, lr=lr, threads=threads, eval_n=eval_n,
              device=device)
    rec = trainer.train_clip(out, **kw) if model == "clip" else trainer.train_resnet(out, **kw)
    click.echo(json.dumps(rec["metrics"], indent=2))


@shapes.command("ground-truth")
@click.argument("method", type=click.Choice(["prs", "splice", "falcon", "dissect", "neurons", "all"]), default="all")
@click.option("--clip", "clip_weights", default=None,
              help="shapes:clip-vit weights file or folder (default: shipped)")
@click.option("--resnet", "resnet_weights", default=None,
              help="shapes:resnet weights file or folder for FALCON and CLIP-Dissect (default: shipped)")
@click.option("--device", default="auto", show_default=True)
@click.option("-n", "--limit", type=int, default=None,
              help="images per check (default: prs 2000, splice 500, falcon 2000, dissect 500, neurons 1000)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ground_truth(method, clip_weights, resnet_weights, device, limit, as_json):
    """Check the built-in methods against the shapes world's known ground truth (PRS /
    TextSpan, SpLiCE, FALCON, CLIP-Dissect, the second-order neuron lens) through the registry, as a user would; print each figure and
    its target."""
    import interpcore

    from .groundtruth import (METHODS, dissect_ground_truth, falcon_ground_truth, neurons_ground_truth,
                              prs_ground_truth, splice_ground_truth)

    if limit is not None and limit <= 0:
        raise InterpError(f"--limit must be > 0, got {limit}")
    methods = METHODS if method == "all" else (method,)
    clip = interpcore.get_backbone("shapes:clip-vit", pretrained=clip_weights, device=device)
    results = {}
    for m in methods:
        if m == "prs":
            results[m] = prs_ground_truth(clip, **({"limit": limit} if limit else {}))
        elif m == "splice":
            results[m] = splice_ground_truth(clip, **({"n": limit} if limit else {}))
        elif m == "neurons":
            results[m] = neurons_ground_truth(clip, **({"n": limit} if limit else {}))
        else:
            resnet = interpcore.get_backbone("shapes:resnet", pretrained=resnet_weights, device=device)
            check = falcon_ground_truth if m == "falcon" else dissect_ground_truth
            results[m] = check(resnet, clip, **({"n": limit} if limit else {}))
    if as_json:
        data = {m: r.to_dict() for m, r in results.items()}
        click.echo(json.dumps(data if method == "all" else data[method], indent=2, default=str))
    else:
        click.echo("\n\n".join(str(r) for r in results.values()))
