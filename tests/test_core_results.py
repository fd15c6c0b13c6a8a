"""The common shape of results and methods: save/load, arrays, one verification field, and
options checked at construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from interpcore import Backbone, Decomposer, InterpError, Result, Verification


@dataclasses.dataclass
class _Parts(Result):
    label: str
    weights: object
    error: float = 0.0

    @property
    def verification(self):
        return Verification("max relative error", self.error, 1e-5)


def test_save_and_load_round_trip_arrays_and_fields(tmp_path):
    r = _Parts("x", np.arange(6, dtype=np.float32).reshape(2, 3), 2e-7)
    r.save(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["result.json", "weights.npy"]
    back = _Parts.load(tmp_path / "r")
    assert back.label == "x" and back.error == 2e-7
    np.testing.assert_array_equal(back.weights, r.weights)
    assert list(r.to_arrays()) == ["weights"]


def test_load_refuses_a_folder_of_another_result(tmp_path):
    @dataclasses.dataclass
    class Other(Result):
        label: str

    Other("y").save(tmp_path / "o")
    with pytest.raises(InterpError, match="not a .*_Parts"):
        _Parts.load(tmp_path / "o")
    with pytest.raises(InterpError, match="holds no saved result"):
        _Parts.load(tmp_path / "missing")


def test_verification_passes_and_fails_by_its_tolerance():
    assert _Parts("a", np.zeros(1), 1e-7).verification.passed
    v = _Parts("a", np.zeros(1), 1e-3).verification
    assert not v.passed and "FAILED" in str(v)


class _BB(Backbone):
    name = "toy:bb"


class _Method(Decomposer):
    name = "toymethod"

    def __init__(self, backbone, *, rank: int = 4, layers=None):
        super().__init__(backbone, rank=rank, layers=layers)


def test_an_unknown_option_names_the_valid_ones_with_a_suggestion():
    with pytest.raises(InterpError, match=r"unknown option 'rnak' for _Method \(method 'toymethod'\)\. "
                                          r"Did you mean: rank\? Valid options: rank, layers"):
        _Method(_BB(), rnak=3)
    assert _Method(_BB(), rank=3).options == {"rank": 3, "layers": None}


def test_built_in_results_verify_themselves_under_one_name():
    from pathlib import Path

    import interpcore

    img = str(Path(__file__).resolve().parents[1] / "examples" / "red_circle.png")
    bb = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    prs = interpcore.get_decomposer("prs", bb).decompose([img]).verification
    assert prs.passed and prs.value < 1e-5 and "sum of contributions" in prs.name
    splice = interpcore.get_decomposer("splice", bb).decompose([img]).verification
    assert splice.passed and splice.name == "largest relative duality gap"
