"""The common shape of results and methods: save/load, arrays, one verification field, and
options checked at construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from typing import Literal

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


def test_built_in_results_verify_themselves_save_load_and_draw(tmp_path):
    from pathlib import Path

    import interpcore
    from interpcore.notebook import result_html

    img = str(Path(__file__).resolve().parents[1] / "examples" / "red_circle.png")
    bb = interpcore.get_backbone("shapes:clip-vit", device="cpu")
    prs_res = interpcore.get_decomposer("prs", bb).decompose([img])
    prs = prs_res.verification
    assert prs.passed and prs.value < 1e-5 and "sum of contributions" in prs.name
    splice_res = interpcore.get_decomposer("splice", bb).decompose([img])
    splice = splice_res.verification
    assert splice.passed and splice.name == "largest relative duality gap"
    ds = interpcore.get_dataset("shapes", split="test")
    data = interpcore.get_decomposer("splice", bb).decompose_dataset(ds, limit=16, batch_size=8)
    assert data.verification.passed and data.verification.name == splice.name
    assert data.verification.value == data.max_relative_gap >= 0
    spans = interpcore.get_explainer("textspan", bb, layers=1, texts_per_head=2,
                                     pool=["red", "blue", "circle", "square"])
    ts_res = spans.explain(ds, limit=16, task=False)
    assert ts_res.verification.passed and "reconstruction" in ts_res.verification.name
    # every result goes through the common folder format and comes back the same
    for i, res in enumerate([prs_res, splice_res, data, ts_res]):
        back = type(res).load(res.save(tmp_path / str(i)))
        assert back.to_dict() == res.to_dict() and str(back) == str(res), type(res).__name__
        assert (back.verification is None) == (res.verification is None)
        if back.verification is not None:
            assert back.verification.value == pytest.approx(res.verification.value)
    # the decomposition and the head labels draw themselves in a notebook
    for res in (prs_res, ts_res):
        assert 'src="data:image/png;base64,' in result_html(res), type(res).__name__


def test_options_annotated_with_simple_types_are_checked_at_construction():
    with pytest.raises(InterpError, match=r"option 'rank' of method 'toymethod' must be an "
                                          r"integer, got '3'"):
        _Method(_BB(), rank="3")
    with pytest.raises(InterpError, match="must be an integer, got True"):
        _Method(_BB(), rank=True)  # a bool is not a count
    # unannotated options are the method's own business
    assert _Method(_BB(), rank=2, layers=[0, "x"]).options["layers"] == [0, "x"]

    class Typed(_Method):
        name = "typed"

        def __init__(self, backbone, *, mode: Literal["a", "b"] = "a", scale: float | None = None):
            super().__init__(backbone)

    assert Typed(_BB(), mode="b", scale=2).backbone
    with pytest.raises(InterpError, match=r"'mode' of method 'typed' must be one of 'a', 'b'"):
        Typed(_BB(), mode="c")
    with pytest.raises(InterpError, match="'scale' .* must be a number or None, got 'x'"):
        Typed(_BB(), scale="x")
