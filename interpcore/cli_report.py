"""``interp report RUN_DIR`` (cli.py adds it to ``interp``)."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=True, dir_okay=True))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=True),
              help="HTML file to write (default: RUN_DIR/report.html).")
def report(run_dir, out):
    """Render a run folder (written by a method command with --out) as one HTML file.

    The file embeds every figure and needs nothing but a browser: no scripts, no fonts,
    no network requests.
    """
    from .report import render_report

    path = render_report(run_dir, out)
    click.echo(f"report written to {path}")
