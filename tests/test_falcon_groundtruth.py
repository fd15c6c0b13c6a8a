"""Ground truth: FALCON on the trained shapes ResNet names true attributes of its groups.

Done-when of issue 8: on ``shapes:resnet`` with the ``shapes`` dataset, at least half of the
interpretable groups found have a true attribute of their highly activating images (a
colour or shape word shared by most of them) among their top three words. The check is the
shapes plugin's (``interp_shapes.groundtruth``, FALCON through the registry). Skipped until the
shapes models' weights exist. Prints the groups, their words and the rate.
"""

from __future__ import annotations

import pytest

import interpcore

interp_shapes = pytest.importorskip("interp_shapes")
from interp_falcon.concepts import singular  # noqa: E402

N_IMAGES = 2000
SIGMA = 3.0


def test_attribute_words_are_singular_as_falcon_words_are():
    """The shapes plugin's check compares FALCON's (singularized) words with the world's
    colour and shape words as they are: that holds only while those are all singular."""
    from interp_shapes.groundtruth import attribute_words

    words = set().union(*attribute_words().values())
    assert words and {w for w in words if singular(w) != w} == set()


@pytest.mark.slow
def test_interpretable_groups_name_a_true_attribute():
    from interp_shapes.groundtruth import falcon_ground_truth

    try:
        target = interpcore.get_backbone("shapes:resnet", device="cpu")
        captioner = interpcore.get_backbone("shapes:clip-vit", device="cpu")
        interpcore.get_vocabulary("shapes-captions")
    except interpcore.InterpError as exc:
        pytest.skip(f"shapes models or caption pool not available yet: {exc}")
    res = falcon_ground_truth(target, captioner, n=N_IMAGES, sigma=SIGMA, max_images=30, batch_size=64)
    print("\n" + str(res))
    n, hits = len(res.groups), sum(g["ok"] for g in res.groups)
    assert n > 0, "no interpretable feature group was found"
    assert res.rate >= 0.5, f"only {hits} of {n} interpretable groups name a true attribute"
