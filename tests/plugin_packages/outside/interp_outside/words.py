"""The outside world's words: the vocabulary, the caption pool, the text tower's word list.

No torch here: the vocabulary loaders run in `interp vocabularies show`.
"""

from __future__ import annotations

import itertools

import interpcore
from interpcore.vocab import resize

COLORS = ["red", "green", "blue"]
SHAPES = ["circle", "square", "triangle"]
BACKGROUNDS = ["dark", "light"]

# Least frequent first, most frequent last (the order of SpLiCE's files), so size=k keeps
# the LAST k: the scene words come last because every caption has them.
FREQUENCY_ORDER = (
    ["kite", "lamp", "moon", "river", "tree", "wheel", "window", "cloud", "door", "ball"]
    + ["small", "large", "bright", "pale"]
    + BACKGROUNDS
    + ["object", "shape", "picture", "photo"]
    + SHAPES
    + COLORS
)

CAPTION_TEMPLATES = ["a {c} {s}", "a photo of a {c} {s}", "a {c} {s} on a {b} background",
                     "a picture of a {s} that is {c}"]


def captions() -> list[str]:
    """Every caption of the outside-shapes language, in a fixed order."""
    texts = (t.format(c=c, s=s, b=b) for t, c, s, b in
             itertools.product(CAPTION_TEMPLATES, COLORS, SHAPES, BACKGROUNDS))
    return list(dict.fromkeys(texts))          # templates without {b} repeat: keep the first


# The text tower's fixed word list: every word the vocabulary and captions use.
WORDS = sorted(set(FREQUENCY_ORDER) | {w for c in captions() for w in c.split()})


def load_words(size=None, **options):
    if options:
        raise interpcore.InterpError(
            f"vocabulary 'outside-words' takes no options; got {', '.join(sorted(options))}.")
    vocab = interpcore.Vocabulary("outside-words", list(FREQUENCY_ORDER), source="interp-outside",
                                  description="least to most frequent", keep="last")
    return resize(vocab, size)


def load_captions(size=None, **options):
    if options:
        raise interpcore.InterpError(
            f"vocabulary 'outside-captions' takes no options; got {', '.join(sorted(options))}.")
    vocab = interpcore.Vocabulary("outside-captions", captions(), source="interp-outside",
                                  description="caption pool", keep="first")
    return resize(vocab, size)
