"""``interp job run|status``: any registered backbone + method over a dataset, sharded and
resumable, in this process or on Ray (cli.py adds the ``job`` group to ``interp``).

Nothing heavy is imported at module level (no torch, no numpy, no ray).
"""

from __future__ import annotations

import json

import click

from ..commands import backbone_options
from ..errors import InterpError
from .options import engine_options


def _parse_options(pairs, what: str) -> dict:
    """``key=value`` pairs; values are JSON where they parse (numbers, true, lists)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@click.group()
def job():
    """Sharded, resumable dataset jobs (local or Ray): backbone + method over a dataset."""


@job.command("run")
@click.option("--dataset", default=None, show_default="the backbone's advertised dataset",
              help="Dataset name, folder:DIR, or webdataset:'PATTERN*.tar'.")
@click.option("--split", default="test", show_default=True)
@backbone_options("vision-language", names=("--backbone",), pretrained=False, device=False)
@click.option("--method", default=None,
              help="Decomposer / explainer name (e.g. prs, splice); none: image embeddings.")
@click.option("--kind", type=click.Choice(["decomposer", "explainer"]), default="decomposer",
              show_default=True)
@click.option("--verb", default=None, help="Method to call (default decompose / explain).")
@click.option("--inputs", type=click.Choice(["pixels", "images", "embeddings"]),
              default="pixels", show_default=True, help="What the method is given per batch.")
@click.option("-D", "--dataset-option", "dataset_opts", multiple=True, metavar="KEY=VALUE")
@click.option("-B", "--backbone-option", "backbone_opts", multiple=True, metavar="KEY=VALUE")
@click.option("-M", "--method-option", "method_opts", multiple=True, metavar="KEY=VALUE")
@click.option("-C", "--call-option", "call_opts", multiple=True, metavar="KEY=VALUE",
              help="Keyword arguments of the method call (e.g. normalize=true).")
@click.option("--adapter", default=None, help="module:function turning a result into arrays.")
@click.option("--plugin", "plugins", multiple=True,
              help="Extra plugin module to register in every worker (module or module:attr).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N samples.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Job folder (arrays, manifest, run.json). Rerun to resume.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also render an HTML report here.")
@click.option("--device", default="auto", show_default=True, help="Local engine device.")
@click.option("--json", "as_json", is_flag=True)
@engine_options
def job_run( dataset, split, backbone, method, kind, verb, inputs, dataset_opts,
            backbone_opts, method_opts, call_opts, adapter, plugins, batch_size, limit, out,
            report_path, device, as_json, **engine_kw):
    """Run (or resume) BACKBONE [+ METHOD] over DATASET into --out, shard by shard.

    \b
    interp job run --method prs -C normalize=true -D n=512 --out runs/prs
    interp job run --method prs -D n=512 --out runs/prs --engine ray --workers 2
    interp job run --dataset folder:photos --backbone open_clip:ViT-B-32 --out runs/emb
    """
    from . import JobSpec, engine_run_args, run_job, run_section

    if dataset is None:
        from ..registry import get_registry

        dataset = get_registry().family_defaults(backbone).get("dataset")
        if dataset is None:
            raise InterpError(f"backbone '{backbone}' advertises no default dataset: give --dataset")
    spec = JobSpec(
        dataset=dataset, split=split, backbone=backbone, method=method, kind=kind, verb=verb,
        inputs=inputs, dataset_options=_parse_options(dataset_opts, "--dataset-option"),
        backbone_options=_parse_options(backbone_opts, "--backbone-option"),
        method_options=_parse_options(method_opts, "--method-option"),
        call_options=_parse_options(call_opts, "--call-option"), adapter=adapter,
        plugins=plugins, batch_size=batch_size, shard_size=engine_kw["shard_size"], limit=limit,
    )
    result = run_job(spec, engine_kw["job_dir"] or out, **engine_run_args(engine_kw, device))
    _write_run(out, spec, result, report_path, run_section(result))
    if as_json:
        click.echo(result.to_json())
    else:
        click.echo(str(result))


def _write_run(out, spec, result, report_path, section) -> None:
    from ..report import write_run

    write_run(out, {
        "method": spec.method or "embeddings", "title": f"{spec.method or 'embeddings'} over "
        f"{spec.dataset} ({result.num_samples} images)", "settings": spec.to_dict(),
        "inputs": [spec.dataset, spec.backbone], "sections": [section],
        "results": {"arrays": result.arrays, "means": result.means,
                    "job_dir": result.out_dir},
    })
    if report_path:
        from ..report import render_report

        render_report(out, report_path)


@job.command("engines")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def job_engines(pattern, as_json):
    """List the engines a job can run on (interpcore's and the plugins')."""
    from ..cli import _simple_list  # not at import time: interpcore.cli imports this module

    _simple_list("engine", pattern, as_json)


@job.command("status")
@click.argument("job_dir")  # a folder or an fsspec URL
@click.option("--json", "as_json", is_flag=True)
def job_status(job_dir, as_json):
    """Show a job folder's spec, progress and arrays (reads only the manifest)."""
    from . import live_status, read_manifest

    m = read_manifest(job_dir)
    status, note = live_status(m)
    if status != m.get("status"):
        m["recorded_status"], m["status"] = m.get("status"), status
    if as_json:
        click.echo(json.dumps({k: v for k, v in m.items() if k != "shards"}
                              | ({"status_note": note} if note else {}), indent=2))
        return
    spec = m.get("spec", {})
    click.echo(f"job {m.get('spec_hash')}: {spec.get('method') or 'embeddings'} on "
               f"{spec.get('backbone')} over {spec.get('dataset')}")
    click.echo(f"status {status}{f' ({note})' if note else ''}: {m.get('shards_done')}/{m.get('shards_total')} "
               f"shards, {m.get('num_samples')} images, updated {m.get('updated')}")
    for name, info in (m.get("arrays") or {}).items():
        mean = (m.get("means") or {}).get(name)
        mtxt = f"  mean {mean:.6g}" if isinstance(mean, float) else ""
        click.echo(f"  {name:<16} {info['dtype']:<8} {tuple(info['shape'])}{mtxt}")
