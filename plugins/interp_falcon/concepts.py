"""Contrastive concept extraction: words and phrases from retrieved captions.

FALCON keeps the words and multi-word phrases that describe the captions of a group's highly
activating crops but not those of its lowly activating images. Everything here is plain
Python plus scikit-learn's tokenizer and English stop-word list: no NLP corpus is downloaded
at run time (the reference uses TextBlob / NLTK, which need corpora).

Scoring (as in the reference): for one image, a term's score is the largest weight of the
image's captions that contain it; a term's score over a set of images is the sum of its
per-image scores divided by the number of images. The rest are ranked by their score over the
highly activating images after one of two rules removes what the lowly activating images
share (``low_rule``):

* ``"reference"``: a term whose score over the low images reaches ``low_threshold`` is
  dropped, however much more the high images show it.
* ``"contrast"`` (FALCON's default here): a term is dropped only when the low images also
  reach ``low_threshold`` on it AND score it at least :data:`SHARED_RATIO` (90%) as high as
  the high images do. The low images are chosen to resemble the group on its other
  features, so they often share an attribute of the group (its colour, say) on fewer of
  them; the fixed cut then removes exactly the words that describe the group, while a word
  that every image shows (scored alike on both sides) still goes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from interpcore import InterpError

#: How the lowly activating images' terms are removed (see the module docstring).
LOW_RULES = ("reference", "contrast")
#: Under the "contrast" rule, a term the low images score at least this fraction of the high
#: images' score is shared by both, not the group's (a margin for the noise of ~10 low images).
SHARED_RATIO = 0.9

#: Words that describe the picture as a file or web object rather than what it shows.
#: Removed from captions before terms are formed (our own list, in the spirit of the
#: reference's "discard words").
BOILERPLATE = frozenset(
    """
    photo photos photograph photographs photography photographer picture pictures pic pics image
    images img stock royalty free jpg jpeg png gif webp file files thumbnail thumbnails preview
    download downloads wallpaper wallpapers hd hq 4k resolution video videos footage clip clips
    camera shot shots closeup close zoom zoomed macro blur blurred blurry focus focused defocused
    www http https com org net html view views showing shows shown display displayed displaying
    icon icons logo logos banner banners vector vectors illustration clipart cartoon render
    rendered sample example caption captioned cropped crop frame framed overlay watermark
    copyright rights reserved editorial license licensed buy sale shop online store price
    new old original best top great nice beautiful cute amazing awesome real high quality
    left right bottom corner isolated background backgrounds selective panoramic portrait
    landscape orientation angle perspective looking look looks picture depicting depicts
    depiction containing contains featuring features
    """.split()
)

_TOKEN = re.compile(r"[a-z][a-z0-9]*")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def clean_caption(text: str) -> list[str]:
    """Lower-case tokens of a caption: apostrophes dropped, other punctuation splits words."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return _TOKEN.findall(text)


def singular(word: str) -> str:
    """A light plural folding (circles -> circle, boxes -> box, berries -> berry)."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def caption_terms(
    caption: str, *, max_phrase: int = 3, stop_words: frozenset[str] | None = None
) -> tuple[set[str], set[str]]:
    """``(words, phrases)`` of one caption.

    Words: tokens of at least three letters that are neither stop words, boilerplate nor
    contain digits, plural-folded. Phrases: runs of 2..``max_phrase`` consecutive such words
    inside a stretch of the caption that no stop word or boilerplate word interrupts (so
    "a red circle on a blue square" gives "red circle" and "blue square", never
    "circle blue").
    """
    stop = _stop_words() if stop_words is None else stop_words
    words: set[str] = set()
    phrases: set[str] = set()
    run: list[str] = []

    def flush():
        for n in range(2, max_phrase + 1):
            for i in range(len(run) - n + 1):
                phrases.add(" ".join(run[i : i + n]))
        run.clear()

    for tok in clean_caption(caption):
        tok_s = singular(tok)
        ok = (
            len(tok) >= 3
            and not any(c.isdigit() for c in tok)
            and tok not in stop
            and tok_s not in stop
            and tok not in BOILERPLATE
            and tok_s not in BOILERPLATE
        )
        if ok:
            words.add(tok_s)
            run.append(tok_s)
        else:
            flush()
    flush()
    return words, phrases


def term_scores(
    caption_sets: Sequence[Sequence[tuple[str, float]]], *, max_phrase: int = 3
) -> tuple[dict[str, float], dict[str, float]]:
    """Word and phrase scores over a set of images.

    ``caption_sets[i]`` is image i's retrieved ``(caption, weight)`` pairs. Per image a term
    gets the largest weight of its captions that contain it; the result is the mean over
    images (images without the term count as 0).
    """
    stop = _stop_words()
    word_tot: dict[str, float] = {}
    phrase_tot: dict[str, float] = {}
    n = len(caption_sets)
    for caps in caption_sets:
        w_img: dict[str, float] = {}
        p_img: dict[str, float] = {}
        for text, weight in caps:
            words, phrases = caption_terms(text, max_phrase=max_phrase, stop_words=stop)
            for w in words:
                w_img[w] = max(w_img.get(w, 0.0), float(weight))
            for p in phrases:
                p_img[p] = max(p_img.get(p, 0.0), float(weight))
        for k, v in w_img.items():
            word_tot[k] = word_tot.get(k, 0.0) + v
        for k, v in p_img.items():
            phrase_tot[k] = phrase_tot.get(k, 0.0) + v
    if n == 0:
        return {}, {}
    return ({k: v / n for k, v in word_tot.items()}, {k: v / n for k, v in phrase_tot.items()})


def contrastive_concepts(
    high: Sequence[Sequence[tuple[str, float]]],
    low: Sequence[Sequence[tuple[str, float]]],
    *,
    top: int = 8,
    low_threshold: float = 0.1,
    max_phrase: int = 3,
    low_rule: str = "reference",
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Top ``top`` words and phrases of the high images after removing the low images' ones.

    ``low_rule="reference"``: a term is removed when its score over ``low`` reaches
    ``low_threshold``; ``"contrast"``: only when it also reaches :data:`SHARED_RATIO` of its
    score over ``high`` (see the module docstring). Returns ``(words, phrases)`` as ``(term, score over high)``
    pairs, best first (ties by name).
    """
    if low_rule not in LOW_RULES:
        raise InterpError(f"unknown low-word rule '{low_rule}'; use {' or '.join(LOW_RULES)}")
    hw, hp = term_scores(high, max_phrase=max_phrase)
    if low:
        lw, lp = term_scores(low, max_phrase=max_phrase)

        def kept(h, lo):
            if low_rule == "reference":
                return {k: v for k, v in h.items() if lo.get(k, 0.0) < low_threshold}
            return {k: v for k, v in h.items()
                    if lo.get(k, 0.0) < low_threshold or lo.get(k, 0.0) < SHARED_RATIO * v}

        hw, hp = kept(hw, lw), kept(hp, lp)

    def best(d):
        return [(k, round(v, 6)) for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]

    return best(hw), best(hp)
