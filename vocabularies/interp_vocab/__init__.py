"""Built-in vocabularies: SpLiCE's concept vocabularies, TextSpan's text pools, custom files.

``laion``, ``laion_bigrams``, ``mscoco`` (SpLiCE) and ``image_descriptions_general``,
``google_3498_english`` (TextSpan) are published text files. On first use each is looked
for in ``folder=`` / ``$INTERP_VOCAB_DIR``, then in the user cache, and otherwise
downloaded from its public URL and checked against its SHA-256 (see :mod:`.published`).
``file`` reads a text file of your own: ``get_vocabulary("file", path="my.txt")``.

Only ``interpcore`` is imported here; the loaders import the rest when called.
"""

from __future__ import annotations

import interpcore


@interpcore.hookimpl
def register_vocabularies(register):
    from .published import PUBLISHED, loader

    for name, spec in PUBLISHED.items():
        register(name, loader(name), description=spec.description)
    register(
        "file",
        _file_vocabulary,
        description="your own text file, one concept per line: path=FILE [keep=first|last]",
    )


def _file_vocabulary(size=None, *, path=None, name=None, keep="first", drop_blank=True,
                     dedupe=True, **options):
    from interpcore.errors import InterpError
    from interpcore.vocab import from_file

    if options:
        raise InterpError(f"vocabulary 'file' has no option(s) {', '.join(sorted(options))}")
    if path is None:
        raise InterpError(
            "vocabulary 'file' needs path=FILE (a text file with one concept per line)"
        )
    return from_file(path, name, size=size, keep=keep, drop_blank=drop_blank, dedupe=dedupe)
