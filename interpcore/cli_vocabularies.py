"""``interp vocabularies show|fetch`` (cli.py adds them to its ``vocabularies`` group).

Neither command imports torch: vocabularies are plain text.
"""

from __future__ import annotations

import click

from .commands import echo_json as _echo_json


def _parse_options(pairs) -> dict:
    """``-o key=value`` pairs; true/false/none and integers are converted."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-o")
        low = value.lower()
        if low in ("true", "yes"):
            out[key] = True
        elif low in ("false", "no"):
            out[key] = False
        elif low == "none":
            out[key] = None
        elif value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _load(name, size, folder, options):
    from .registry import get_registry

    opts = _parse_options(options)
    if folder is not None:
        opts["folder"] = folder
    return get_registry().get_vocabulary(name, size=size, **opts)


def _summary(vocab) -> dict:
    if hasattr(vocab, "summary"):
        return vocab.summary()
    return {"name": vocab.name, "count": len(vocab), "source": vocab.source,
            "description": vocab.description, "content_hash": vocab.content_hash}


@click.command("show")
@click.argument("name")
@click.option("--size", type=int, default=None,
              help="Keep K entries (the K most frequent for frequency-sorted vocabularies).")
@click.option("--head", "head", type=int, default=10, show_default=True,
              help="How many entries to print from the start (0: none).")
@click.option("--tail", "tail", type=int, default=0, help="How many entries to print from the end.")
@click.option("--all", "show_all", is_flag=True, help="Print every entry, one per line, nothing else.")
@click.option("--folder", type=click.Path(file_okay=False), default=None,
              help="Read the file from this folder instead of the cache / a download.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Loader option, e.g. -o path=my.txt for the 'file' vocabulary, -o raw=true.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def vocabularies_show(name, size, head, tail, show_all, folder, options, as_json):
    """Show vocabulary NAME (a registered name or a text file): size, source, entries.

    \b
    Examples:
      interp vocabularies show laion --size 10000 --tail 5
      interp vocabularies show my_concepts.txt
      interp vocabularies show mscoco --all > mscoco.txt
    """
    if head < 0 or tail < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--head/--tail")
    vocab = _load(name, size, folder, options)
    concepts = list(vocab.concepts)
    if show_all:
        for c in concepts:
            click.echo(c)
        return
    info = _summary(vocab)
    if as_json:
        info["head"] = concepts[:head]
        info["tail"] = concepts[len(concepts) - tail :] if tail else []
        _echo_json(info)
        return
    click.echo(f"{info['name']}: {len(concepts)} entries")
    if info.get("description"):
        click.echo(f"  {info['description']}")
    if info.get("source"):
        click.echo(f"  source: {info['source']}")
    if info.get("path") and info.get("path") != info.get("source"):
        click.echo(f"  file:   {info['path']}")
    if info.get("size") is not None:
        end = "last" if info.get("keep") == "last" else "first"
        click.echo(f"  size={info['size']}: the {end} {info['size']} of {info['total']} entries")
    dropped = []
    if info.get("blank_dropped"):
        dropped.append(f"{info['blank_dropped']} blank")
    if info.get("duplicates_dropped"):
        dropped.append(f"{info['duplicates_dropped']} duplicate")
    if dropped:
        click.echo(f"  dropped: {' and '.join(dropped)} line(s)")
    click.echo(f"  content hash: {info['content_hash']}")
    width = len(str(len(concepts)))
    if head:
        for i, c in enumerate(concepts[:head]):
            click.echo(f"  {i:>{width}}  {c}")
    if tail:
        start = max(len(concepts) - tail, min(head, len(concepts)))
        if head and start > head:
            click.echo(f"  {'':>{width}}  ...")
        for i in range(start, len(concepts)):
            click.echo(f"  {i:>{width}}  {concepts[i]}")


@click.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every vocabulary that has a file.")
@click.option("--folder", type=click.Path(file_okay=False), default=None,
              help="Also copy each file into this folder (for a machine without network: "
                   "point INTERP_VOCAB_DIR at it there).")
def vocabularies_fetch(names, fetch_all, folder):
    """Download vocabulary files now (checked against their SHA-256) into the cache."""
    from .download import copy_into
    from .errors import InterpError
    from .registry import get_registry

    reg = get_registry()
    if fetch_all:
        names = tuple(n for n in reg.names("vocabulary") if n != "file") + tuple(names)
    if not names:
        raise click.UsageError("name one or more vocabularies, or use --all")
    fetched, failed = 0, []
    for name in names:
        try:
            vocab = reg.get_vocabulary(name)
        except InterpError as exc:
            if len(names) == 1:
                raise
            click.echo(f"interp: error: {name}: {exc}", err=True)
            failed.append(name)
            continue
        path = getattr(vocab, "path", None)
        if not path:
            if fetch_all:
                continue
            raise InterpError(f"vocabulary '{name}' is not read from a file: nothing to fetch")
        where = path
        if folder is not None:
            where = copy_into(path, folder)
        click.echo(f"{name:<28} {len(vocab):>7} entries  {where}")
        fetched += 1
    if fetch_all and not fetched and not failed:
        click.echo("no vocabulary is read from a file")
    if failed:
        raise InterpError(f"could not fetch {len(failed)} vocabulary file(s): {', '.join(failed)}")
