"""interpcore.zeroshot: templates, classifier weights, accuracy."""

import pytest
import torch

from interpcore import InterpError
from interpcore.zeroshot import (
    OPENAI_IMAGENET_TEMPLATES,
    accuracy,
    classifier_weights,
    fill_templates,
    predict,
)


class FakeTextBackbone:
    """encode_text: a fixed random embedding per distinct text (records batch sizes)."""

    def __init__(self, dim=8):
        self.dim = dim
        self.calls = []

    def _one(self, text):
        g = torch.Generator().manual_seed(abs(hash(text)) % (2**31))
        return torch.randn(self.dim, generator=g)

    def encode_text(self, texts, *, normalize=False, batch_size=256):
        self.calls.append(len(texts))
        return torch.stack([self._one(t) * 3.0 for t in texts])


def test_templates_match_open_clip_list():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as ref

    assert len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert [t.format("dog") for t in OPENAI_IMAGENET_TEMPLATES] == [f("dog") for f in ref]


def test_classifier_weights_is_renormalized_mean_of_normalized_templates():
    bb = FakeTextBackbone()
    templates = ["a {}.", "the {}!", "one {} here"]
    w = classifier_weights(bb, ["cat", "dog"], templates, batch_size=4)
    assert w.shape == (2, 8)
    for k, c in enumerate(["cat", "dog"]):
        z = torch.nn.functional.normalize(torch.stack([bb._one(t.format(c)) for t in templates]), dim=-1)
        expect = torch.nn.functional.normalize(z.mean(0), dim=0)
        torch.testing.assert_close(w[k], expect)
    assert max(bb.calls) <= 4  # encoded in batches


def test_default_templates_are_openai_80():
    bb = FakeTextBackbone()
    classifier_weights(bb, ["cat"])
    assert sum(bb.calls) == 80


def test_bad_templates_and_classes_raise():
    bb = FakeTextBackbone()
    with pytest.raises(InterpError, match="placeholder"):
        classifier_weights(bb, ["cat"], ["no slot"])
    with pytest.raises(InterpError, match="at least one class"):
        classifier_weights(bb, [])
    assert fill_templates("cat", [lambda c: f"x {c}"]) == ["x cat"]


def test_accuracy_and_predict():
    w = torch.eye(3)
    z = torch.tensor([[5.0, 0, 0], [0, 2.0, 0.1], [0, 3.0, 0.5], [0.0, 0.1, 1.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert predict(z, w).tolist() == [0, 1, 1, 2]
    assert accuracy(z, w, labels) == pytest.approx(0.75)
    assert accuracy(z, w, labels, topk=2) == pytest.approx(1.0)
    with pytest.raises(InterpError, match="labels"):
        accuracy(z, w, labels[:2])
    with pytest.raises(InterpError, match="size"):
        accuracy(z[:, :2], w, labels)
