"""The engine package's layout and its engine registry: a third-party engine registers
through the ``register_engines`` hook like a backbone does, the core's ``local`` and ``ray``
keep their names, and an unknown engine name is a one-line error with suggestions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import interpcore
import interpcore.registry as R
from interpcore import engine
from interpcore.engine import JobSpec, ShardWorker, run_job

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import engine_toy  # noqa: E402


class ReverseEngine:
    """A third-party engine: computes the shards last to first, in this process."""

    runs: list = []

    def __init__(self, device="cpu", **_ignored):
        self.device = device
        self.workers = 1

    def run(self, spec, shards, writer, sink):
        worker = ShardWorker(spec, device=self.device)
        for shard in reversed(shards):
            type(self).runs.append(shard.id)
            sink(shard, worker.write_shard(shard, writer, engine="reverse"))


class EnginePlugin:
    @interpcore.hookimpl
    def register_engines(self, register):
        register("reverse", ReverseEngine, description="shards last to first")
        register("local", ReverseEngine, description="tries to take the core's name")


@pytest.fixture
def registry():
    old = R._registry
    reg = R.Registry(load_entry_points=False)
    R.reset_registry(reg)
    reg.register_plugin(engine_toy, "engine_toy")
    reg.register_plugin(EnginePlugin(), "engine-plugin")
    yield reg
    R.reset_registry(old)


def spec(**kw) -> JobSpec:
    base = dict(dataset="enginetoy", backbone="enginetoy:tiny", method="toy_sparse",
                shard_size=16, batch_size=8, dataset_options={"n": 40})
    return JobSpec(**{**base, **kw})


def test_each_engine_module_holds_what_it_says():
    where = {"JobSpec": "spec", "Shard": "spec", "import_object": "spec",
             "ImageFolderSource": "sources", "WebDatasetSource": "sources",
             "read_samples": "sources", "ShardWorker": "worker", "to_arrays": "worker",
             "JobStore": "store", "load_array": "store", "iter_shards": "store",
             "read_manifest": "store", "job_result": "store", "LocalEngine": "engines",
             "run_job": "engines", "get_engine": "engines", "engine_options": "options"}
    for name, module in where.items():
        assert getattr(engine, name).__module__ == f"interpcore.engine.{module}", name
    for name in engine.__all__:
        assert hasattr(engine, name), name


def test_a_plugin_engine_runs_a_job_like_local(registry, tmp_path):
    assert {"local", "ray", "reverse"} <= set(registry.names("engine"))
    ReverseEngine.runs.clear()
    local = run_job(spec(), tmp_path / "a", progress=False, device="cpu")
    other = run_job(spec(), tmp_path / "b", engine="reverse", progress=False)
    assert ReverseEngine.runs == [2, 1, 0]
    assert other.engine == "reverse" and other.computed == [0, 1, 2]
    for name in local.arrays:
        np.testing.assert_array_equal(local.load(name), other.load(name))
    again = run_job(spec(), tmp_path / "b", engine="reverse", progress=False)
    assert again.computed == [] and ReverseEngine.runs == [2, 1, 0]  # resumed: nothing ran


def test_the_core_engines_keep_their_names(registry):
    assert registry.entries["engine"]["local"].plugin == "interpcore"
    assert isinstance(engine.get_engine("local"), engine.LocalEngine)
    assert any(c["name"] == "local" and c["ignored"] == ["engine-plugin"]
               for c in registry.clashes())


def test_an_unknown_engine_names_the_closest(registry, tmp_path):
    with pytest.raises(interpcore.InterpError, match="Did you mean: reverse") as info:
        run_job(spec(), tmp_path / "c", engine="revers", progress=False)
    assert "interp job engines" in str(info.value)
    assert not (tmp_path / "c").exists()


def test_a_replaced_registry_does_not_reuse_another_dataset_of_the_same_name(registry):
    """Datasets are cached per process by name and options, and by the registry's factory:
    a registry replaced by another (tests, notebooks) with its own 'enginetoy' is not served
    the first one's dataset."""

    class Other:
        @interpcore.hookimpl
        def register_datasets(self, register):
            register("enginetoy", lambda split="test", n=40: engine_toy.ToyDataset(split, n=7))

    assert engine.num_samples(spec()) == 40
    other = R.Registry(load_entry_points=False)
    R.reset_registry(other)
    other.register_plugin(Other(), "other-toy")
    assert engine.num_samples(spec()) == 7
