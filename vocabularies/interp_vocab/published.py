"""The published vocabulary and text-pool files: where they live, their SHA-256, their order.

URLs and checksums are facts about public files (SpLiCE: Apache-2.0, AI4LIFE-GROUP/SpLiCE;
TextSpan: MIT, yossigandelsman/clip_text_span). Nothing of them is copied into this
repository: the files are downloaded on first use or read from a folder the user names.
"""

from __future__ import annotations

import dataclasses

SPLICE = "https://raw.githubusercontent.com/AI4LIFE-GROUP/SpLiCE/main/data/"
TEXTSPAN = "https://raw.githubusercontent.com/yossigandelsman/clip_text_span/main/text_descriptions/"

#: environment variable naming a local folder that holds the files (flat or as vocab/, text_pools/)
ENV_FOLDER = "INTERP_VOCAB_DIR"
#: environment variable naming a base URL that mirrors the same layout (vocab/..., text_pools/...)
ENV_MIRROR = "INTERP_VOCAB_MIRROR"


@dataclasses.dataclass(frozen=True)
class Published:
    relpath: str
    url: str
    sha256: str
    lines: int
    keep: str  # which end "size=k" keeps: "last" = file sorted least -> most frequent
    description: str
    has_blank: bool = False


PUBLISHED: dict[str, Published] = {
    "laion": Published(
        "vocab/laion.txt", SPLICE + "vocab/laion.txt",
        "aee8e260477dcfbc873f939955ffd472969859054ed46e245bbe8b37d10b508c", 37445, "last",
        "SpLiCE LAION words (37,445), least to most frequent; size=k keeps the k most frequent",
    ),
    "laion_bigrams": Published(
        "vocab/laion_bigrams.txt", SPLICE + "vocab/laion_bigrams.txt",
        "6561525228843aa8b0d2b27e731c8c2b18dac0e4bdda40761933b0aecda1e67a", 15000, "last",
        "SpLiCE LAION bigrams then words (15,000); size=k keeps the k most frequent",
    ),
    "mscoco": Published(
        "vocab/mscoco.txt", SPLICE + "vocab/mscoco.txt",
        "ddd84fc591b2e49c1513cc3dcc199153df276a44686712e21a6efb7711e2d43b", 12833, "last",
        "SpLiCE MSCOCO words (12,832 + 1 blank line dropped); size=k keeps the k most frequent",
        has_blank=True,
    ),
    "image_descriptions_general": Published(
        "text_pools/image_descriptions_general.txt",
        TEXTSPAN + "image_descriptions_general.txt",
        "39c6bf3e788684d9e0e8afa902c13aae1ee8eafefdbab94ba923fd05b9038630", 3498, "first",
        "TextSpan text pool: short image descriptions (3,498 lines, 3,493 distinct); size=k keeps the first k",
    ),
    "google_3498_english": Published(
        "text_pools/google_3498_english.txt", TEXTSPAN + "google_3498_english.txt",
        "d9502487f471d07e44b8ae79e01fd03527ab032be2c7d721c1346f97efdaf2c5", 3498, "first",
        "TextSpan text pool: 3,498 common English words, most frequent first; size=k keeps the first k",
    ),
}


def remote_file(name: str):
    from interpcore.download import RemoteFile

    spec = PUBLISHED[name]
    return RemoteFile(spec.relpath, spec.url, spec.sha256, what=f"vocabulary '{name}' ({spec.relpath})")


def load(name: str, size=None, *, folder=None, verify: bool = True, mirror: str | None = None,
         download: bool = True, raw: bool = False):
    """Load a published vocabulary (see the package docstring for where it is looked for).

    By default the cleaning policy of :mod:`interpcore.vocab` applies: blank lines are dropped
    (``mscoco``'s line 12,825 is blank, so ``size=k`` still gives k real concepts) and
    duplicates too (``image_descriptions_general`` has 5 lines that differ from earlier ones
    only by spaces). ``raw=True`` keeps every (stripped) line instead, blank ones as empty
    strings, so that entry i is line i of the selected part of the file, exactly as SpLiCE's
    and TextSpan's own loaders see them.
    """
    import os

    from interpcore.download import locate
    from interpcore.vocab import from_lines, read_lines

    spec = PUBLISHED[name]
    mirror = mirror or os.environ.get(ENV_MIRROR, "").strip() or None
    path = locate(remote_file(name), folder=folder, env_var=ENV_FOLDER, cache_subdir="downloads",
                  mirror=mirror, verify=verify, download=download)
    return from_lines(
        read_lines(path), name, size=size, keep=spec.keep, drop_blank=not raw,
        dedupe=not raw, source=spec.url, description=spec.description, path=path,
    )


def loader(name: str):
    def load_published(size=None, **options):
        from interpcore.errors import InterpError

        allowed = {"folder", "verify", "mirror", "download", "raw"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InterpError(
                f"vocabulary '{name}' has no option(s) {', '.join(unknown)}; "
                f"it takes size, {', '.join(sorted(allowed))}"
            )
        return load(name, size, **options)

    load_published.__name__ = f"load_{name}"
    return load_published
