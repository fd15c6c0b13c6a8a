"""Engine pieces the PRS store reads through: JSON sample fields in the Parquet tables, a
lazy row reader across shards, in-process dataset objects and backbones, and the name a
registry-made dataset carries."""

import numpy as np
import pytest

import interpcore
from interpcore.engine import (EngineError, JobArray, JobSpec, bind_dataset, load_array,
                               load_columns, load_table, run_job)


class _Objects(interpcore.Dataset):
    """Images with captions, attribute dicts and a label missing on every third sample."""

    name = "objects"

    def __init__(self, n=10):
        rng = np.random.default_rng(0)
        self.items = [{"image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                       "label": None if i % 3 == 0 else i % 2, "caption": f"image {i}",
                       "attributes": {"k": i, "tags": ["a"] * (i % 3)}} for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Backbone:
    """Only what a method-less job uses: pixels and an 'embedding' per image."""

    name = "object:mean-colour"

    def to_pixels(self, images):
        import torch

        return torch.as_tensor(np.stack(images), dtype=torch.float32)

    def encode_image(self, pixels, batch_size=None, normalize=False):
        return pixels.mean(dim=(1, 2))


def test_object_dataset_and_backbone_with_json_fields(tmp_path):
    ds = _Objects(10)
    spec = JobSpec(dataset=bind_dataset("object:test-objects", ds), backbone="object:mean-colour",
                   fields=("label", "caption", "attributes"), shard_size=4, batch_size=3)
    res = run_job(spec, tmp_path / "job", backbone=_Backbone(), progress=False)
    assert res.computed == [0, 1, 2]
    want = np.stack([it["image"] for it in ds.items]).astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_allclose(load_array(tmp_path / "job", "embedding"), want, rtol=1e-6)
    cols = load_columns(tmp_path / "job", ["label", "caption", "attributes", "absent"])
    assert cols["label"] == [it["label"] for it in ds.items]  # gaps kept as None
    assert cols["caption"] == [f"image {i}" for i in range(10)]
    assert cols["attributes"] == [it["attributes"] for it in ds.items]
    assert cols["absent"] == [None] * 10
    assert "label" not in res.arrays  # not every sample has one: a table column only
    assert load_table(tmp_path / "job").column("caption").to_pylist()[3] == "image 3"
    again = run_job(spec, tmp_path / "job", backbone=_Backbone(), progress=False)
    assert again.computed == [] and again.skipped == [0, 1, 2]


def test_an_unbound_object_dataset_is_refused(tmp_path):
    spec = JobSpec(dataset="object:never-bound", backbone="object:mean-colour")
    with pytest.raises(EngineError, match="only the local engine of the process"):
        run_job(spec, tmp_path / "job", backbone=_Backbone(), progress=False)
    with pytest.raises(EngineError, match="starts with 'object:'"):
        bind_dataset("shapes", _Objects(2))


def test_job_array_reads_rows_across_shards(tmp_path):
    ds = _Objects(10)
    spec = JobSpec(dataset=bind_dataset("object:test-objects-2", ds), backbone="object:mean-colour",
                   fields=(), shard_size=3, batch_size=3)
    run_job(spec, tmp_path / "job", backbone=_Backbone(), progress=False)
    full = load_array(tmp_path / "job", "embedding")
    a = JobArray(tmp_path / "job", "embedding")
    assert a.shape == full.shape and len(a) == 10 and a.ndim == 2
    for rows in ([9, 0, 4, 3], slice(2, 8), np.arange(10) % 2 == 0, [-1]):
        np.testing.assert_array_equal(a[rows], full[rows])
    np.testing.assert_array_equal(a[7], full[7])
    np.testing.assert_array_equal(a[[1, 8], 2], full[[1, 8], 2])
    np.testing.assert_array_equal(a + full, 2 * full)
    np.testing.assert_array_equal(a.sum(0), full.sum(0))
    np.testing.assert_array_equal(np.linalg.norm(a, axis=1), np.linalg.norm(full, axis=1))
    with pytest.raises(IndexError):
        a[10]
    with pytest.raises(EngineError, match="no array 'nope'"):
        JobArray(tmp_path / "job", "nope")


def test_registry_datasets_record_how_they_were_made(monkeypatch):
    class _Plugin:
        @staticmethod
        @interpcore.hookimpl
        def register_datasets(register):
            register("objects-named", lambda split="test", n=4: _Objects(n))

    import interpcore.registry as R

    old = R._registry
    reg = R.Registry(load_entry_points=False)
    R.reset_registry(reg)
    try:
        reg.register_plugin(_Plugin, "objects-named-plugin")
        ds = reg.get_dataset("objects-named", split="train", n=3)
        assert ds.job_source == {"dataset": "objects-named", "split": "train",
                                 "dataset_options": {"n": 3}}
        assert len(ds) == 3
    finally:
        R.reset_registry(old)
