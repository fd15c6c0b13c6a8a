"""Command-line options shared by dataset-level commands (click is imported only when the
decorator is applied)."""

from __future__ import annotations

from collections.abc import Mapping

from .engines import ENGINES


def engine_run_args(kw: Mapping, device: str = "auto") -> dict:
    """``run_job`` keyword arguments from the values of :func:`engine_options`."""
    args = {"engine": kw.get("engine") or "local", "overwrite": bool(kw.get("overwrite"))}
    if args["engine"] != "ray":  # Ray workers pick their own device (a GPU where there is one)
        args["device"] = device
    if args["engine"] != "local":
        args.update(address=kw.get("address"), num_workers=kw.get("workers"))
    return args


def engine_requested(kw: Mapping) -> bool:
    """Whether the values of :func:`engine_options` ask for an engine job: another engine
    than ``local``, or a ``--job-dir`` (commands that can also work in process use this)."""
    return (kw.get("engine") or "local") != "local" or bool(kw.get("job_dir"))


def _check_engine(ctx, param, value):
    """An unknown ``--engine`` is a usage error naming the closest registered engines (the
    names come from the registry, so plugins' engines are valid too)."""
    import click

    from ..errors import InterpError
    from ..registry import get_registry

    try:
        get_registry().entry("engine", value)
    except InterpError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def engine_options(func):
    """Click decorator adding ``--engine/--address/--workers/--shard-size/--job-dir/--overwrite``.

    The command receives ``engine, address, workers, shard_size, job_dir, overwrite``; pass
    them to :func:`run_job` (``address``/``workers`` only matter for ``--engine ray``).
    """
    import click

    opts = [
        click.option("--engine", default="local", show_default=True, callback=_check_engine,
                     help=f"Where shards run: {' or '.join(ENGINES)} (a cluster), or an engine a "
                          "plugin registers (interp job engines)."),
        click.option("--address", default=None,
                     help="Ray cluster address (e.g. ray://head:10001 or auto); default: start "
                          "a local cluster on 127.0.0.1."),
        click.option("--workers", type=int, default=None,
                     help="Ray model workers (one model each); default: one per GPU, else per CPU."),
        click.option("--shard-size", type=int, default=256, show_default=True,
                     help="Images per shard (the unit of resume)."),
        click.option("--job-dir", default=None,
                     help="Folder or fsspec URL (s3://..., gs://...) for the per-shard arrays "
                          "and manifest (resumable)."),
        click.option("--overwrite", is_flag=True, help="Replace a job folder of a different job."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


