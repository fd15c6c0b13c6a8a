"""SpLiCE on the shapes world, where the truth is known (needs the shipped shapes CLIP).

Done-when (issue 6): on 500 held-out single-object shapes images, ``shapes`` vocabulary,
l1 = 0.25, the true colour and the true shape (or a synonym of each) are both among the five
largest weights for at least 90% of images; mean L0 in [3, 20]; the mean cosine is printed.
Also: solver parity with scikit-learn on the shapes dictionary and real embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "backbones" / "interp_shapes_models" / "weights"
pytestmark = pytest.mark.skipif(
    not (WEIGHTS / "clip-vit.safetensors").is_file(),
    reason="shapes CLIP weights not shipped yet (backbones/interp_shapes_models/weights/)",
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import os

    os.environ.setdefault("INTERP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    import interp_splice as splice

    return splice.load("shapes:clip-vit", "shapes", l1_penalty=0.25, device="cpu")


def _names(words):
    return {w.lower() for w in words}


def _mentions(concept: str, words) -> bool:
    """Whether a concept (word or phrase) names one of ``words`` as a whole word sequence."""
    return any(re.search(rf"(^|\s){re.escape(w)}($|\s)", concept) for w in words)


def test_true_colour_and_shape_are_among_the_top_five(model):
    from interp_shapes import world
    from interp_shapes.datasets import ShapesDataset

    ds = ShapesDataset("test", n=500, one_object_prob=1.0)
    images, truth = [], []
    for i in range(len(ds)):
        s = ds[i]
        obj = s["attributes"]["objects"][0]
        assert len(s["attributes"]["objects"]) == 1
        images.append(s["image"])
        truth.append((obj["color"], obj["shape"]))
    res = model.explain(images)
    strict = phrase = 0
    for i, (colour, shape) in enumerate(truth):
        top = [c for c, _ in res.top(i, 5)]
        cols, shps = world.COLOR_SYNONYMS[colour], world.SHAPE_SYNONYMS[shape]
        strict += any(c in _names(cols) for c in top) and any(c in _names(shps) for c in top)
        phrase += any(_mentions(c, cols) for c in top) and any(_mentions(c, shps) for c in top)
    n = len(truth)
    print(f"\nSpLiCE on {n} held-out single-object shapes images (shapes vocabulary, l1=0.25):"
          f"\n  true colour and shape among the top 5, as single words or synonyms: "
          f"{strict / n:.1%}"
          f"\n  ... counting phrases that name them (e.g. 'red circle'): {phrase / n:.1%}"
          f"\n  mean L0 {res.mean_l0:.2f}, mean cosine {res.mean_cosine:.4f}")
    assert 3 <= res.mean_l0 <= 20, f"mean L0 {res.mean_l0:.2f} outside [3, 20]"
    assert phrase / n >= 0.9, f"only {phrase / n:.1%} of images have colour and shape in the top 5"


@pytest.mark.parametrize("l1", (0.1, 0.2, 0.25, 0.3, 0.35))
def test_parity_with_sklearn_on_the_shapes_dictionary(model, l1):
    from interp_shapes.datasets import ShapesDataset
    from interp_splice.solvers import ActiveSetSolver, objective, solve_sklearn

    ds = ShapesDataset("test", n=24)
    z = model.embed_images([ds[i]["image"] for i in range(len(ds))])
    v = model.center(torch.nn.functional.normalize(z, dim=1))
    C = model.dictionary
    W, info = ActiveSetSolver(C).solve(v, l1)
    Ws, _ = solve_sklearn(C, v, l1)
    f, fs = objective(C, v, W, l1), objective(C, v, Ws, l1)
    rel = ((f - fs) / fs).abs()
    print(f"l1={l1}: mean L0 {float((W > 0).sum(1).float().mean()):.1f}, largest relative "
          f"objective difference to sklearn {float(rel.max()):.1e}")
    assert bool(info.converged.all())
    assert float(rel.max()) <= 1e-4
