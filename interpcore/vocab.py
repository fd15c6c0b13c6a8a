"""Vocabularies from text files and Python lists, with one explicit cleaning policy.

The policy, applied by :func:`from_lines` (and so by :func:`from_file`, :func:`from_list`
and the built-in file vocabularies unless they say otherwise):

* every entry is stripped of surrounding whitespace (as SpLiCE does with ``line.strip()``);
* **blank entries are dropped** and counted (``blank_dropped``);
* **duplicates are dropped, keeping the first occurrence**, and counted
  (``duplicates_dropped``); comparison is exact (case-sensitive) after stripping;
* ``size=k`` then keeps k entries: the first k (``keep="first"``, the default for custom
  vocabularies) or the last k (``keep="last"``, for files sorted from least to most
  frequent, as SpLiCE's are). The order of the file is kept either way;
* ``size=None`` or ``size=-1`` (the reference's spelling) keeps everything; a vocabulary
  with no entry left is an error, as is ``size`` 0, below -1, or larger than what is there
  (the registry applies the same rule to every plugin's vocabularies).

The counts are kept on the returned :class:`TextVocabulary` and shown by
``interp vocabularies show``. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from .base import Vocabulary
from .errors import InterpError

KEEP_CHOICES = ("first", "last")


@dataclasses.dataclass
class TextVocabulary(Vocabulary):
    """A :class:`~interpcore.Vocabulary` that remembers where it came from and what was cut."""

    path: str | None = None  #: the file the entries were read from, if any
    total: int = 0  #: entries available after cleaning, before ``size`` was applied
    size: int | None = None  #: the ``size`` asked for (None: everything)
    blank_dropped: int = 0
    duplicates_dropped: int = 0

    def summary(self) -> dict:
        return {
            "name": self.name,
            "count": len(self.concepts),
            "total": self.total,
            "size": self.size,
            "keep": self.keep,
            "blank_dropped": self.blank_dropped,
            "duplicates_dropped": self.duplicates_dropped,
            "source": self.source,
            "path": self.path,
            "description": self.description,
            "content_hash": self.content_hash,
        }


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM, CRLF endings and no final newline are fine)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InterpError(f"vocabulary file not found: {path}")
    if not path.is_file():
        raise InterpError(f"vocabulary path is not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InterpError(
            f"vocabulary file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
            "save it as UTF-8 with one concept per line"
        ) from None
    if "\x00" in text:
        raise InterpError(f"vocabulary file {path} looks binary (it contains NUL bytes)")
    return text.splitlines()


def clean(entries: Iterable, *, drop_blank: bool = True, dedupe: bool = True,
          name: str = "custom") -> tuple[list[str], int, int]:
    """Strip entries, drop blanks and duplicates: ``(entries, blank_dropped, duplicates_dropped)``."""
    out: list[str] = []
    seen: set[str] = set()
    blank = dup = 0
    for i, item in enumerate(entries):
        if not isinstance(item, str):
            raise InterpError(
                f"vocabulary '{name}' entry {i} is a {type(item).__name__} ({item!r}); "
                "entries must be strings"
            )
        text = item.strip()
        if not text and drop_blank:
            blank += 1
            continue
        if dedupe:
            if text in seen:
                dup += 1
                continue
            seen.add(text)
        out.append(text)
    return out, blank, dup


def normalize_size(size, name: str) -> int | None:
    """``size`` as a positive int, or None for the whole vocabulary (``None`` or ``-1``)."""
    if size is None:
        return None
    if isinstance(size, bool):
        raise InterpError(f"vocabulary size must be a whole number, got {size!r}")
    if not isinstance(size, int):
        try:
            as_int = int(size)
        except (TypeError, ValueError, OverflowError):
            as_int = None
        if as_int is None or as_int != size:
            raise InterpError(f"vocabulary size must be a whole number, got {size!r}")
        size = as_int
    if size == -1:
        return None
    if size < 1:
        raise InterpError(
            f"vocabulary size must be at least 1 (or -1 / None for all of '{name}'), got {size}"
        )
    return size


def check_size(size, available: int, name: str) -> int | None:
    """Validate ``size`` against the number of entries available."""
    size = normalize_size(size, name)
    if size is not None and size > available:
        raise InterpError(
            f"vocabulary '{name}' has {available} entries; size={size} asks for more"
        )
    return size


def fit_size(vocab: Vocabulary, size) -> Vocabulary:
    """A plugin's vocabulary held to the ``size`` asked for: an error when it has fewer
    entries, cut (at the end its ``keep`` says) when the plugin returned more."""
    size = normalize_size(size, vocab.name)
    if size is None or len(vocab) == size:
        return vocab
    check_size(size, len(vocab), vocab.name)
    return resize(vocab, size)


def take(entries: list[str], size: int | None, keep: str = "first", name: str = "custom") -> list[str]:
    """The first or last ``size`` entries, in their original order."""
    if keep not in KEEP_CHOICES:
        raise InterpError(f"keep must be 'first' or 'last', got {keep!r}")
    size = check_size(size, len(entries), name)
    if size is None:
        return list(entries)
    return list(entries[:size]) if keep == "first" else list(entries[len(entries) - size :])


def from_lines(
    lines: Iterable,
    name: str = "custom",
    *,
    size: int | None = None,
    keep: str = "first",
    drop_blank: bool = True,
    dedupe: bool = True,
    source: str = "",
    description: str = "",
    path=None,
) -> TextVocabulary:
    """A :class:`TextVocabulary` from raw lines, with the module's cleaning policy."""
    entries, blank, dup = clean(lines, drop_blank=drop_blank, dedupe=dedupe, name=name)
    if not entries:
        where = f" ({path})" if path else ""
        extra = f"; {blank} blank line(s) were dropped" if blank else ""
        raise InterpError(f"vocabulary '{name}'{where} is empty{extra}: it needs at least one concept")
    kept = take(entries, size, keep, name)
    return TextVocabulary(
        name=name, concepts=kept, source=source, description=description,
        path=None if path is None else str(path), total=len(entries), size=size, keep=keep,
        blank_dropped=blank, duplicates_dropped=dup,
    )


def from_file(path, name: str | None = None, *, size: int | None = None, keep: str = "first",
              drop_blank: bool = True, dedupe: bool = True, description: str = "") -> TextVocabulary:
    """A vocabulary from a text file with one concept per line (see the module policy)."""
    path = Path(path).expanduser()
    lines = read_lines(path)
    return from_lines(
        lines, name or path.stem, size=size, keep=keep, drop_blank=drop_blank, dedupe=dedupe,
        source=str(path), description=description or f"custom vocabulary from {path}", path=path,
    )


def from_list(items, name: str = "custom", *, size: int | None = None, keep: str = "first",
              drop_blank: bool = True, dedupe: bool = True, description: str = "") -> TextVocabulary:
    """A vocabulary from a Python list (or tuple) of strings (see the module policy)."""
    if isinstance(items, (str, bytes)):
        raise InterpError("a vocabulary list must be a list of strings, not one string")
    return from_lines(
        list(items), name, size=size, keep=keep, drop_blank=drop_blank, dedupe=dedupe,
        source="python list", description=description or "custom vocabulary (Python list)",
    )


def resize(vocab: Vocabulary, size: int | None) -> Vocabulary:
    """``vocab`` cut to ``size`` at the end its ``keep`` says (the start for plain ones)."""
    if size is None:
        return vocab
    keep = vocab.keep
    kept = take(list(vocab.concepts), size, keep, vocab.name)
    if isinstance(vocab, TextVocabulary):
        return dataclasses.replace(vocab, concepts=kept, size=size)
    return TextVocabulary(name=vocab.name, concepts=kept, source=vocab.source,
                          description=vocab.description, keep=keep, total=len(vocab), size=size)


def looks_like_path(name) -> bool:
    """Whether a vocabulary argument should be read as a file path rather than a name."""
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str):
        return False
    return ("/" in name or os.sep in name or name.endswith((".txt", ".csv"))
            or name.startswith("~") or Path(name).is_file())
