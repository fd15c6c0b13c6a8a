"""Job folders on any fsspec file system: the workers write the shards' files where the
output lives (here fsspec's in-memory and local file systems) and the driver only records
them; resume, damage detection and the readers work the same as on a local folder."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

import interpcore
from interpcore import engine
from interpcore.engine import JobSpec, run_job
from interpcore.engine.store import JobStore

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import engine_toy  # noqa: E402

interpcore.get_registry().register_plugin(engine_toy, "engine_toy")


def toy_spec(**kw) -> JobSpec:
    base = dict(dataset="enginetoy", backbone="enginetoy:tiny", method="toy_sparse",
                plugins=("engine_toy",), shard_size=16, batch_size=8, dataset_options={"n": 40})
    return JobSpec(**{**base, **kw})


@pytest.fixture
def mem_url():
    url = f"memory://interp-test-{uuid.uuid4().hex[:8]}/job"
    yield url
    fs = fsspec.filesystem("memory")
    root = url.split("://", 1)[1].split("/")[0]
    if fs.exists(root):  # a test that skipped before writing left nothing
        fs.rm(root, recursive=True)


def test_a_memory_job_equals_a_local_one_and_resumes(tmp_path, mem_url):
    local = run_job(toy_spec(), tmp_path / "local", progress=False)
    mem = run_job(toy_spec(), mem_url, progress=False)
    assert mem.out_dir == mem_url and mem.computed == [0, 1, 2]
    for name in local.arrays:
        np.testing.assert_array_equal(local.load(name), mem.load(name))
        np.testing.assert_array_equal(local.load(name), engine.load_array(mem_url, name))
    assert mem.means == local.means
    np.testing.assert_array_equal(mem.mean("weights"), local.mean("weights"))
    assert engine.read_manifest(mem_url)["status"] == "complete"
    assert engine.job_result(mem_url).arrays == local.arrays
    shards = list(engine.iter_shards(mem_url, ["l0"]))
    assert [len(s["l0"]) for s in shards] == [16, 16, 8]

    fs = fsspec.filesystem("memory")
    root = mem_url.split("://", 1)[1]
    assert not [p for p in fs.find(root) if p.endswith(".part")]  # no temporary left behind
    again = run_job(toy_spec(), mem_url, progress=False)
    assert again.computed == [] and again.skipped == [0, 1, 2]
    # damage shard 1 (same size, other bytes) and drop shard 2's record: only they rerun
    path = f"{root}/arrays/weights/shard-00001.npy"
    data = bytearray(fs.cat_file(path))
    data[-1] ^= 0xFF
    fs.pipe_file(path, bytes(data))
    fs.rm(f"{root}/records/shard-00002.json")
    third = run_job(toy_spec(), mem_url, progress=False)
    assert third.computed == [1, 2] and third.skipped == [0]
    np.testing.assert_array_equal(third.load("weights"), local.load("weights"))
    with pytest.raises(engine.EngineError, match="different job"):
        run_job(toy_spec(batch_size=4), mem_url, progress=False)


def test_a_file_url_writes_the_same_files_as_a_path(tmp_path):
    url = f"file://{tmp_path}/viaurl"
    res = run_job(toy_spec(), url, progress=False)
    disk = tmp_path / "viaurl"
    assert sorted(p.name for p in (disk / "arrays" / "weights").iterdir()) == \
        ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    path_job = run_job(toy_spec(), disk, progress=False)  # the same folder by path: resumes
    assert path_job.computed == [] and res.computed == [0, 1, 2]
    np.testing.assert_array_equal(engine.load_array(url, "weights", mmap=True),
                                  path_job.load("weights"))


def test_the_driver_gets_records_not_arrays(tmp_path, monkeypatch):
    seen = []
    original = JobStore.record

    def spy(self, shard, rec):
        json.dumps(rec)  # a record is small JSON: file names, shapes, sizes, checksums
        assert not any(isinstance(v, np.ndarray) for v in rec.values())
        seen.append(rec["shard"])
        return original(self, shard, rec)

    monkeypatch.setattr(JobStore, "record", spy)
    res = run_job(toy_spec(), tmp_path / "job", progress=False)
    assert seen == [0, 1, 2] == res.computed
    rec = json.loads((tmp_path / "job" / "records" / "shard-00001.json").read_text())
    assert rec["arrays"]["weights"]["file"] == "arrays/weights/shard-00001.npy"


def test_unknown_protocols_and_memory_on_ray_are_refused(tmp_path, mem_url):
    with pytest.raises(engine.EngineError, match="cannot open the job folder"):
        run_job(toy_spec(), "nosuchfs://bucket/job", progress=False)
    pytest.importorskip("ray")
    with pytest.raises(engine.EngineError, match="memory:// job folder lives in one process"):
        run_job(toy_spec(), mem_url, engine="ray", progress=False)


def test_per_image_scalars_and_vectors_are_also_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    res = run_job(toy_spec(), tmp_path / "job", progress=False)
    frame = pd.read_parquet(tmp_path / "job" / "tables").sort_values("index")
    assert list(frame["index"]) == list(range(40))
    assert set(frame.columns) == {"index", "weights", "l0", "cosine", "label"}
    for name in ("l0", "cosine", "label"):
        np.testing.assert_array_equal(frame[name].to_numpy(), res.load(name))
    np.testing.assert_array_equal(np.stack(frame["weights"].to_numpy()), res.load("weights"))
    table = engine.load_table(tmp_path / "job")
    np.testing.assert_array_equal(table.column("cosine").to_numpy(), res.load("cosine"))
    # a damaged table is found on resume and only its shard is recomputed
    path = tmp_path / "job" / "tables" / "shard-00002.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    again = run_job(toy_spec(), tmp_path / "job", progress=False)
    assert again.computed == [2] and again.skipped == [0, 1]
    assert len(pd.read_parquet(path)) == 8


def test_higher_rank_arrays_stay_npy_only(tmp_path, mem_url):
    pytest.importorskip("pandas")
    res = run_job(toy_spec(method="toy_parts"), mem_url, progress=False)
    assert res.arrays["contributions"]["shape"] == [40, 8, 8]
    table = engine.load_table(mem_url)
    assert table.column_names == ["index", "embedding", "label"]
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)),
                                  res.load("embedding"))


def test_the_tables_read_with_polars_and_duckdb(tmp_path):
    run_job(toy_spec(), tmp_path / "job", progress=False)
    pattern = str(tmp_path / "job" / "tables" / "*.parquet")
    readers = 0
    try:
        import polars as pl
    except ImportError:
        pl = None
    if pl is not None:
        assert pl.read_parquet(pattern).sort("index")["l0"].to_list() == \
            engine.load_array(tmp_path / "job", "l0").tolist()
        readers += 1
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        rows = duckdb.sql(f"select count(*), sum(l0) from '{pattern}'").fetchall()
        assert rows == [(40, int(engine.load_array(tmp_path / "job", "l0").sum()))]
        readers += 1
    if not readers:
        pytest.skip("neither polars nor duckdb is installed")


def test_the_job_commands_take_a_url_for_the_job_folder(tmp_path, mem_url):
    from click.testing import CliRunner

    from interpcore.cli import cli

    args = ["-q", "job", "run", "--dataset", "enginetoy", "--backbone", "enginetoy:tiny",
            "--method", "toy_sparse", "-D", "n=40", "--batch-size", "8", "--shard-size", "16",
            "--device", "cpu", "--out", str(tmp_path / "run"), "--job-dir", mem_url]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["results"]["job_dir"] == mem_url
    r = CliRunner().invoke(cli, ["job", "status", mem_url])
    assert r.exit_code == 0 and "status complete: 3/3 shards" in r.output, r.output


def test_a_writer_pickles_to_the_same_place_from_another_folder(tmp_path, monkeypatch):
    import pickle

    from interpcore.engine.store import Location

    monkeypatch.chdir(tmp_path)
    loc = Location("relative/job")
    monkeypatch.chdir("/")  # a worker started elsewhere
    again = pickle.loads(pickle.dumps(loc))
    assert again.root == str(tmp_path / "relative" / "job") and again.is_local
    mem = pickle.loads(pickle.dumps(Location("memory://bucket/x")))
    assert mem.url == "memory://bucket/x" and mem.protocol == "memory"
