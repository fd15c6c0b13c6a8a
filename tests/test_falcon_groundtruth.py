"""Ground truth: FALCON on the trained shapes ResNet names true attributes of its groups.

Done-when of issue 8: on ``shapes:resnet`` with the ``shapes`` dataset, at least half of the
interpretable groups found have a true attribute of their highly activating images (a
colour or shape word shared by most of them) among their top three words. Skipped until the
shapes models' weights exist. Prints the groups, their words and the rate.
"""

from __future__ import annotations

import pytest

import interpcore

interp_shapes = pytest.importorskip("interp_shapes")
from interp_falcon.concepts import singular  # noqa: E402

N_IMAGES = 2000
SIGMA = 3.0


def _models():
    try:
        target = interpcore.get_backbone("shapes:resnet", device="cpu")
        captioner = interpcore.get_backbone("shapes:clip-vit", device="cpu")
        interpcore.get_vocabulary("shapes-captions")
    except interpcore.InterpError as exc:
        pytest.skip(f"shapes models or caption pool not available yet: {exc}")
    return target, captioner


def _attribute_words():
    """value -> the words that name it in captions (canonical name and synonyms)."""
    from interp_shapes import world

    generic = set(world.GENERIC_NOUNS)
    out = {}
    for kind, syn in (("color", world.COLOR_SYNONYMS), ("shape", world.SHAPE_SYNONYMS)):
        for value, names in syn.items():
            words = {singular(value)}
            for n in names:
                words |= {singular(w) for w in n.split() if w not in generic}
            out[(kind, value)] = words
    return out


def _true_attributes(ds, images, share: float = 0.5):
    """(kind, value) pairs present on more than ``share`` of the images (any object)."""
    counts: dict[tuple[str, str], int] = {}
    for i in images:
        objs = ds[i]["attributes"]["objects"]
        seen = {("color", o["color"]) for o in objs} | {("shape", o["shape"]) for o in objs}
        for a in seen:
            counts[a] = counts.get(a, 0) + 1
    return [a for a, c in counts.items() if c > share * len(images)]


@pytest.mark.slow
def test_interpretable_groups_name_a_true_attribute():
    target, captioner = _models()
    ds = interpcore.get_dataset("shapes", split="test", n=N_IMAGES)
    # The shapes ResNet's pooled layer has only 128 dense features: no image reaches the
    # reference's mean + 5 std there (the rule was set for 512-2048 sparse ResNet features),
    # so this small model is probed at 3 std.
    falcon = interpcore.get_explainer("falcon", target, captioner=captioner,
                                      pool="shapes-captions", batch_size=64, sigma=SIGMA,
                                      max_images=30)
    res = falcon.explain(ds)
    words_of = _attribute_words()
    hits, rows = 0, []
    for g in res.interpretable:
        truth = _true_attributes(ds, g.images)
        top3 = [w for w, _ in g.words[:3]]
        ok = any(w in words_of[a] for a in truth for w in top3)
        hits += ok
        rows.append(f"group {g.id:>3} [{g.key}] n={len(g.images):>4} score={g.score:.3f} "
                    f"truth={['/'.join(a) for a in truth]} top3={top3} "
                    f"phrases={[p for p, _ in g.phrases[:3]]} {'OK' if ok else 'miss'}")
    n = len(res.interpretable)
    rate = hits / n if n else 0.0
    print(f"\n{len(res.groups)} groups, {n} interpretable (threshold {res.threshold:.4f})")
    for r in rows:
        print(r)
    print(f"rate: {hits}/{n} = {rate:.2f}")
    assert n > 0, "no interpretable feature group was found"
    assert rate >= 0.5, f"only {hits} of {n} interpretable groups name a true attribute"
