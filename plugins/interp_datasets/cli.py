"""``interp datasets show NAME``: check that a dataset on disk is found and read as expected.

Added to the ``datasets`` group of the core CLI by ``register_commands``. Only click and the core are imported here.
"""

from __future__ import annotations

import json

import click


def _parse_option(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got '{text}'")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


@click.command("show")
@click.argument("name")
@click.option("--root", help="Folder (or file) that holds the dataset.")
@click.option("--split", default="test", show_default=True)
@click.option("--download", is_flag=True, help="Download it where the dataset supports that (CIFAR).")
@click.option("-O", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Any other dataset option, e.g. -O mask_root=masks/ -O limit=100.")
@click.option("-n", "--samples", default=3, show_default=True, help="Samples to describe.")
@click.option("--json", "as_json", is_flag=True)
def show(name, root, split, download, options, samples, as_json):
    """Load dataset NAME and describe it: size, classes, groups, first samples."""
    import interpcore

    kwargs = dict(_parse_option(o) for o in options)
    if root is not None:
        kwargs["root"] = root
    if download:
        kwargs["download"] = True
    ds = interpcore.get_dataset(name, split=split, **kwargs)
    info = {"name": name, "split": split, "size": len(ds), "type": type(ds).__name__,
            "classes": None if ds.classes is None else len(ds.classes),
            "first_classes": None if ds.classes is None else list(ds.classes[:10])}
    if hasattr(ds, "groups"):
        counts: dict[int, int] = {}
        for g in ds.groups():
            counts[g] = counts.get(g, 0) + 1
        info["groups"] = dict(sorted(counts.items()))
    described = []
    for i in range(min(samples, len(ds))):
        s = ds[i]
        d = {"index": i, "image_size": list(s["image"].size)}
        if "label" in s:
            d["label"] = s["label"]
            if ds.classes is not None:
                d["class"] = ds.classes[s["label"]]
        if "mask" in s:
            d["mask_values"] = sorted(set(s["mask"].ravel().tolist()))[:10]
        for k in ("group", "path", "attributes"):
            if k in s:
                d[k] = s[k]
        described.append(d)
    info["samples"] = described
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"{name} ({info['type']}), split {split}: {info['size']} samples")
    if info["classes"] is not None:
        more = "" if info["classes"] <= 10 else ", ..."
        click.echo(f"classes: {info['classes']} ({', '.join(info['first_classes'])}{more})")
    if "groups" in info:
        click.echo("groups: " + ", ".join(f"{g}: {n}" for g, n in info["groups"].items()))
    for d in described:
        rest = ", ".join(f"{k}={v}" for k, v in d.items() if k != "index")
        click.echo(f"  [{d['index']}] {rest}")
