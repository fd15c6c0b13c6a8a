"""Vocabularies of the shapes world (no torch)."""

from __future__ import annotations

import functools

from interpcore import InterpError, Vocabulary

from . import world

CAPTION_POOL_SIZE = 5000
CAPTION_POOL_SEED = 12345

#: Common English words that never occur in shapes captions (for the stress vocabulary).
COMMON_WORDS = """
dog cat car house tree person man woman child bird horse boat train airplane bicycle
computer phone book table chair door window road city mountain river forest cloud sun moon
food apple banana bread coffee pizza music song movie game ball team school teacher doctor
money market bank office street kitchen bed garden flower leaf rock fire smoke rain storm
night morning summer winter old new young happy sad fast slow hot cold dark bright heavy
soft loud quiet rich poor clean dirty beautiful ugly strong weak wooden metal glass plastic
paper cotton leather silver gold black white brown gray running walking sleeping eating
reading writing flying swimming driving cooking dancing singing laughing crying building
bridge castle church tower village island desert ocean lake valley field farm animal fish
insect robot machine engine wheel clock lamp mirror painting camera guitar piano
""".split()


def caption_pool(n: int = CAPTION_POOL_SIZE, seed: int = CAPTION_POOL_SEED) -> list[str]:
    return list(_caption_pool(int(n), int(seed)))


@functools.lru_cache(maxsize=4)
def _caption_pool(n: int, seed: int) -> tuple[str, ...]:
    """``n`` distinct captions of random scenes (1-2 objects, every attribute mentioned
    sometimes), deterministic from ``seed``."""
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n:
        rng = world.sample_rng(seed, "captions", i)
        scene = world.random_scene(rng, one_object_prob=0.7)
        c = world.caption(scene, rng)
        if c not in seen:
            seen.add(c)
            out.append(c)
        i += 1
        if i > 50 * n:  # pragma: no cover - the language has far more captions than this
            raise InterpError(f"could not draw {n} distinct shapes captions")
    return tuple(out)


#: Words of each attribute category, as phrases of the caption language use them.
def _category_words() -> dict[str, list[str]]:
    w = world
    return {
        "color": [s for c in w.COLORS for s in w.COLOR_SYNONYMS[c]] + list(w.COLORS),
        "shape": [s for k in w.SHAPES for s in w.SHAPE_SYNONYMS[k]],
        "size": [s for k in w.SIZES for s in w.SIZE_SYNONYMS[k]],
        "position": ["top", "bottom", "left", "right", "upper", "lower", "center", "middle"],
        "background": [p for b in w.BACKGROUNDS for p in w.BACKGROUND_PHRASES[b]]
        + list(w.BACKGROUNDS) + ["grassy", "lawn", "sea", "beach", "snowy", "wall", "bricks"],
    }


def text_categories(text: str) -> set[str]:
    """The attribute categories a phrase names (by its words)."""
    t = f" {text.lower()} "
    found = set()
    for cat, ws in _category_words().items():
        if any(f" {x} " in t or t.strip() == x for x in ws):
            found.add(cat)
    return found


def load(name: str, size: int | None = None, **options) -> Vocabulary:
    if options:
        raise InterpError(f"vocabulary '{name}' takes no options, got {', '.join(sorted(options))}")
    if size is not None and int(size) <= 0:
        raise InterpError(f"size must be a positive number, got {size}")
    if name == "shapes":
        concepts = world.vocabulary_phrases()
        desc = "every word and short phrase of the shapes world's caption language"
    elif name == "shapes-attributes":
        # one clear label per text, so a TextSpan head basis reads as the attributes it carries
        concepts = [t for t in world.vocabulary_phrases() if len(text_categories(t)) == 1]
        desc = "the shapes vocabulary's phrases that name exactly one attribute"
    elif name == "shapes-captions":
        concepts = caption_pool(max(int(size or 0), CAPTION_POOL_SIZE))
        desc = "distinct captions of random shapes-world scenes (FALCON caption pool)"
    elif name == "shapes-stress":
        base = world.vocabulary_phrases()
        concepts = base + [w for w in COMMON_WORDS if w not in base]
        desc = "shapes words plus common English words unseen in training (stress test)"
    else:  # pragma: no cover - only registered names reach here
        raise InterpError(f"unknown shapes vocabulary '{name}'")
    if size is not None:
        concepts = concepts[: int(size)]
    return Vocabulary(name, concepts, source="generated", description=desc)
