"""The contract checks shipped for plugin authors catch what they claim to catch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interpcore import Capability, Decomposer, Result, Vocabulary
from interpcore.testing import ContractError, check_method, check_vocabulary
from interpcore.torch_backbone import TorchBackbone, capture


class LinearBackbone(TorchBackbone):
    def __init__(self):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        super().__init__("test:linear", model, device="cpu", embed_dim=4,
                         transform=lambda im: torch.zeros(3, 8, 8),
                         capabilities=[Capability.IMAGE_ENCODER])

    def _encode_image(self, pixels):
        return self.model(pixels)


@dataclasses.dataclass
class NormResult(Result):
    norms: list

    def __str__(self):
        return f"norms {self.norms}"


class NormDecomposer(Decomposer):
    name = "norms"
    requires = (Capability.IMAGE_ENCODER,)

    def decompose(self, images, **kwargs):
        with capture(self.backbone.module("1")):
            z = self.backbone.encode_image(images)
        return NormResult(z.norm(dim=-1).tolist())


class LeakyDecomposer(NormDecomposer):
    """Leaves a forward hook behind: the contract must flag it."""

    def decompose(self, images, **kwargs):
        self.backbone.model.register_forward_hook(lambda *a: None)
        return NormResult([0.0])


def test_check_method_passes_a_well_behaved_decomposer():
    report = check_method(NormDecomposer(LinearBackbone()), torch.rand(2, 3, 8, 8))
    assert "leaves no forward hooks behind" in report.passed


def test_check_method_flags_leftover_hooks():
    with pytest.raises(ContractError, match="forward hooks were left"):
        check_method(LeakyDecomposer(LinearBackbone()), torch.rand(2, 3, 8, 8))


def test_check_vocabulary_checks_entries_and_size():
    words = ["rare", "common", "very common"]  # least to most frequent: keep="last"
    report = check_vocabulary(Vocabulary("w", words, keep="last"),
                              sized=lambda k: Vocabulary("w", words[-k:], keep="last"))
    assert len(report.passed) == 4
    with pytest.raises(ContractError, match="expected the last 2 entries"):
        check_vocabulary(Vocabulary("w", words, keep="last"),
                         sized=lambda k: Vocabulary("w", words[:k], keep="last"))
    # most frequent first (TextSpan's google_3498_english, custom lists): the first k
    ranked = ["the", "of", "and"]
    check_vocabulary(Vocabulary("r", ranked), sized=lambda k: Vocabulary("r", ranked[:k]))
    with pytest.raises(ContractError, match="expected the first 2 entries"):
        check_vocabulary(Vocabulary("r", ranked), sized=lambda k: Vocabulary("r", ranked[-k:]))
    with pytest.raises(ContractError, match="empty"):
        check_vocabulary(Vocabulary("w", ["a", " "]))



def test_tiny_open_clip_backbone_is_a_registry_backbone_that_passes_the_contract():
    pytest.importorskip("open_clip")
    from interpcore.testing import check_backbone, tiny_images, tiny_open_clip_backbone

    bb = tiny_open_clip_backbone(name="tiny:contract")
    assert bb.name == "tiny:contract" and bb.embed_dim == 24
    assert {Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER, Capability.VIT_RESIDUAL_STREAM} <= set(bb.capabilities)
    check_backbone(bb)
    # the same seed gives the same weights; another seed other weights
    a, b = tiny_open_clip_backbone(seed=1), tiny_open_clip_backbone(seed=2)
    sa, sb = a.model.state_dict(), tiny_open_clip_backbone(seed=1).model.state_dict()
    assert all((sa[k] == sb[k]).all() for k in sa)
    assert not all((sa[k] == b.model.state_dict()[k]).all() for k in sa)
    ds = tiny_images(6, seed=3)
    assert len(ds) == 6 and [ds[i]["label"] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert bb.encode_image([ds[i]["image"] for i in range(3)]).shape == (3, 24)
