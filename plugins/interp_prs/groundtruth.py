"""Ground-truth checks of PRS / TextSpan on the synthetic shapes world (issue 7, done-when).

The shapes world's images are generated from known attributes (colour, shape, size,
position, background), so what a head *should* encode can be checked:

1. the first TextSpan text of the heads of the last two layers covers at least three
   attribute categories;
2. mean-ablating the heads whose first text is a background phrase lowers zero-shot
   background accuracy by >= 20 points while shape and colour accuracy move <= 3 points;
3. on ``shapes-spurious``, ablating those heads raises zero-shot worst-group accuracy by
   >= 10 points;
4. zero-shot segmentation of the objects reaches mIoU >= 0.5.

Every figure is measured and printed, whether or not it reaches its target.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interpcore import InterpError, Result

CATEGORIES = ("color", "shape", "size", "position", "background")


def _world():
    try:
        from interp_shapes import world
    except ImportError:
        raise InterpError("the shapes-world checks need the interp_shapes plugin") from None
    return world


def text_categories(text: str) -> set[str]:
    """The attribute categories a shapes-world phrase names (by its words)."""
    w = _world()
    t = f" {text.lower()} "
    found = set()
    words = {
        "color": [s for c in w.COLORS for s in w.COLOR_SYNONYMS[c]] + list(w.COLORS),
        "shape": [s for k in w.SHAPES for s in w.SHAPE_SYNONYMS[k]],
        "size": [s for k in w.SIZES for s in w.SIZE_SYNONYMS[k]],
        "position": ["top", "bottom", "left", "right", "upper", "lower", "center", "middle"],
        "background": [p for b in w.BACKGROUNDS for p in w.BACKGROUND_PHRASES[b]] + list(w.BACKGROUNDS)
        + ["grassy", "lawn", "sea", "beach", "snowy", "wall", "bricks"],
    }
    for cat, ws in words.items():
        for x in ws:
            if f" {x} " in t or t.strip() == x:
                found.add(cat)
                break
    return found


def text_category(text: str) -> str | None:
    """The single category of a phrase, or None when it names none or several."""
    cats = text_categories(text)
    return next(iter(cats)) if len(cats) == 1 else None


def shapes_attribute_pool():
    """The shapes vocabulary's phrases that name exactly one attribute ("crimson", "on
    grass", "hexagon", "little", "in the upper left"): one clear label per text, so a head's
    TextSpan basis reads as the attributes it carries."""
    import interpcore

    try:
        vocab = interpcore.get_vocabulary("shapes")
        texts = list(vocab.concepts)
    except InterpError:
        texts = _world().vocabulary_phrases()
    return interpcore.Vocabulary("shapes-attributes", [t for t in texts if len(text_categories(t)) == 1],
                                 source="shapes vocabulary, single-attribute phrases")


@dataclasses.dataclass
class GroundTruthResult(Result):
    backbone: str
    n_images: int
    first_texts_last_two_layers: dict  # "L3.H0" -> text
    categories_covered: list
    background_heads: list
    zero_shot_before: dict  # task -> accuracy %
    zero_shot_after: dict
    spurious_worst_before: float
    spurious_worst_after: float
    segmentation_miou: float
    search_agreement: dict  # category -> {"head": "Lx.Hy", "agreement_at_8": float, "chance": float}
    checks: dict  # name -> {"value": ..., "target": str, "passed": bool}

    def __str__(self) -> str:
        lines = [f"Shapes-world ground truth for {self.backbone} ({self.n_images} images)"]
        lines.append("  first TextSpan text of each head of the last two layers:")
        for k, v in self.first_texts_last_two_layers.items():
            cats = text_categories(v)
            label = "+".join(sorted(cats)) if cats else "no attribute"
            lines.append(f"    {k:<7} {v}  [{label}]")
        lines.append("  background heads: " + (", ".join(f"L{a}.H{b}" for a, b in self.background_heads) or "none"))
        for task in self.zero_shot_before:
            lines.append(f"  zero-shot {task:<10} {self.zero_shot_before[task]:6.2f}% -> "
                         f"{self.zero_shot_after[task]:6.2f}% after ablating the background heads")
        lines.append(f"  shapes-spurious worst group {self.spurious_worst_before:6.2f}% -> "
                     f"{self.spurious_worst_after:6.2f}%")
        lines.append(f"  zero-shot segmentation mIoU {self.segmentation_miou:.3f}")
        for cat, a in self.search_agreement.items():
            lines.append(f"  image search in {a['head']} (first text a {cat}): {100 * a['agreement_at_8']:.0f}% "
                         f"of 8 neighbours share the query's {cat} (chance {100 * a['chance']:.0f}%)")
        lines.append("  checks:")
        for name, c in self.checks.items():
            lines.append(f"    [{'PASS' if c['passed'] else 'MISS'}] {name}: {c['value']} (target {c['target']})")
        return "\n".join(lines)


def shapes_ground_truth(backbone, *, limit: int = 2000, seg_limit: int = 500, batch_size: int = 128,
                        pool=None, texts_per_head: int = 5, rank: int = 80) -> GroundTruthResult:
    import interpcore

    from .decompose import PRSDecomposer, decompose_dataset
    from .spatial import segment_dataset
    from .spurious import representation, spurious_study
    from .tasks import dataset_tasks, task_weights
    from .textspan import TextSpanExplainer, resolve_pool

    dec = PRSDecomposer(backbone)
    L = dec.stream.num_layers
    layers = list(range(L))
    ds = interpcore.get_dataset("shapes", split="test")
    store = decompose_dataset(dec, ds, layers=layers, limit=limit, batch_size=batch_size,
                              desc="PRS (shapes)")
    pool = shapes_attribute_pool() if pool is None else resolve_pool(pool)
    ts = TextSpanExplainer(backbone, layers=L, texts_per_head=texts_per_head, rank=rank).explain_store(
        store, pool, task=False)
    last_two = {f"L{h['layer']}.H{h['head']}": h["texts"][0] for h in ts.heads if h["layer"] >= L - 2}
    covered = sorted({c for t in last_two.values() if (c := text_category(t))})
    bg_heads = [(h["layer"], h["head"]) for h in ts.heads if text_category(h["texts"][0]) == "background"]

    tasks = dataset_tasks("shapes", ds.classes)
    before, after = {}, {}
    rep0 = representation(store)
    rep1 = representation(store, bg_heads) if bg_heads else rep0
    for name in ("background", "shape", "color"):
        t = tasks[name]
        y = t.labels(store.samples)
        keep = y >= 0
        W = task_weights(backbone, t).numpy()
        before[name] = float(((rep0[keep] @ W.T).argmax(-1) == y[keep]).mean() * 100)
        after[name] = float(((rep1[keep] @ W.T).argmax(-1) == y[keep]).mean() * 100)

    sp = interpcore.get_dataset("shapes-spurious", split="test")
    sp_store = decompose_dataset(dec, sp, layers=layers, limit=limit, batch_size=batch_size,
                                 desc="PRS (shapes-spurious)")
    sp_tasks = dataset_tasks("shapes-spurious", sp.classes)
    spr = spurious_study(sp_store, bg_heads, weights=task_weights(backbone, sp_tasks["label"]).numpy(),
                         backbone=backbone.name)
    seg = segment_dataset(dec, ds, task_weights(backbone, tasks["shape"]), limit=seg_limit,
                          batch_size=32, n_figures=0)
    from .search import agreement_at_k

    search = {}
    for cat in ("color", "size", "background"):
        heads = [(h["layer"], h["head"]) for h in ts.heads if text_category(h["texts"][0]) == cat]
        if not heads:
            continue
        li, hi = heads[-1]  # the latest layer's head labelled with this category
        vals = [(s_.get("attributes") or {}).get(cat) for s_ in store.samples]
        vals = [v for v in vals if v is not None]
        chance = float(sum((vals.count(v) / len(vals)) ** 2 for v in set(vals))) if vals else 0.0
        search[cat] = {"head": f"L{li}.H{hi}", "chance": chance,
                       "agreement_at_8": agreement_at_k(store, [(li, hi)], cat, k=8,
                                                        queries=range(0, len(store), 5))}
    d_bg = before["background"] - after["background"]
    moves = max(abs(before[k] - after[k]) for k in ("shape", "color"))
    checks = {
        "first texts of the last two layers cover >= 3 categories": {
            "value": len(covered), "target": ">= 3", "passed": len(covered) >= 3},
        "background accuracy drop (points)": {"value": round(d_bg, 2), "target": ">= 20",
                                              "passed": d_bg >= 20},
        "largest shape / colour accuracy change (points)": {"value": round(moves, 2), "target": "<= 3",
                                                            "passed": moves <= 3},
        "shapes-spurious worst-group gain (points)": {
            "value": round(spr.after["worst"] - spr.before["worst"], 2), "target": ">= 10",
            "passed": spr.after["worst"] - spr.before["worst"] >= 10},
        "segmentation mIoU": {"value": round(seg.miou, 3), "target": ">= 0.5", "passed": seg.miou >= 0.5},
    }
    return GroundTruthResult(
        backbone=backbone.name, n_images=len(store), first_texts_last_two_layers=last_two,
        categories_covered=covered, background_heads=[list(h) for h in bg_heads],
        zero_shot_before=before, zero_shot_after=after, spurious_worst_before=spr.before["worst"],
        spurious_worst_after=spr.after["worst"], segmentation_miou=seg.miou, search_agreement=search, checks=checks,
    )
