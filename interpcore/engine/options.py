"""Command-line options shared by dataset-level commands (click is imported only when the
decorator is applied)."""

from __future__ import annotations

from collections.abc import Mapping

from .engines import ENGINES


def engine_run_args(kw: Mapping, device: str = "auto") -> dict:
    """``run_job`` keyword arguments from the values of :func:`engine_options`."""
    args = {"engine": kw.get("engine") or "local", "overwrite": bool(kw.get("overwrite"))}
    if args["engine"] == "ray":
        args.update(address=kw.get("address"), num_workers=kw.get("workers"))
    else:
        args["device"] = device
    return args


def engine_options(func):
    """Click decorator adding ``--engine/--address/--workers/--shard-size/--job-dir/--overwrite``.

    The command receives ``engine, address, workers, shard_size, job_dir, overwrite``; pass
    them to :func:`run_job` (``address``/``workers`` only matter for ``--engine ray``).
    """
    import click

    opts = [
        click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                     help="Run in this process (local) or on a Ray cluster (ray)."),
        click.option("--address", default=None,
                     help="Ray cluster address (e.g. ray://head:10001 or auto); default: start "
                          "a local cluster on 127.0.0.1."),
        click.option("--workers", type=int, default=None,
                     help="Ray model workers (one model each); default: one per GPU, else per CPU."),
        click.option("--shard-size", type=int, default=256, show_default=True,
                     help="Images per shard (the unit of resume)."),
        click.option("--job-dir", type=click.Path(file_okay=False), default=None,
                     help="Folder for the per-shard arrays and manifest (resumable)."),
        click.option("--overwrite", is_flag=True, help="Replace a job folder of a different job."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


