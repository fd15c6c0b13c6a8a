"""The sharded job runner (interpcore.engine) on its local engine: same results as calling
the method directly, resume after a kill, refusing to mix jobs, the array protocol, and the
folder / WebDataset readers. The plugin under test is tests/engine_toy.py, registered the
way a third-party plugin is (by name, in every worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import interpcore
from interpcore import engine
from interpcore.engine import EngineError, JobSpec, run_job

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import engine_toy  # noqa: E402

interpcore.get_registry().register_plugin(engine_toy, "engine_toy")


def toy_spec(**kw) -> JobSpec:
    base = dict(dataset="enginetoy", backbone="enginetoy:tiny", method="toy_sparse",
                plugins=("engine_toy",), shard_size=16, batch_size=8,
                dataset_options={"n": 40})
    base.update(kw)
    return JobSpec(**base)


def direct(spec: JobSpec) -> dict:
    """The single-process reference: the method on every image in one call."""
    bb = interpcore.get_backbone(spec.backbone, device="cpu")
    method = interpcore.get_decomposer(spec.method, bb, **spec.method_options)
    ds = interpcore.get_dataset(spec.dataset, **spec.dataset_options)
    images = [ds[i]["image"] for i in range(len(ds))]
    out = method.decompose(bb.to_pixels(images))
    return {k: np.asarray(v) for k, v in out.to_arrays().items()}  # every Result has to_arrays


def test_spec_hash_is_stable_and_tracks_every_option():
    a, b = toy_spec(), toy_spec()
    assert a.hash == b.hash
    assert JobSpec.from_dict(json.loads(json.dumps(a.to_dict()))).hash == a.hash
    for change in ({"shard_size": 8}, {"method_options": {"threshold": 0.2}}, {"limit": 10},
                   {"dataset_options": {"n": 41}}, {"backbone_options": {"pretrained": "x"}}):
        assert toy_spec(**change).hash != a.hash, change


@pytest.mark.parametrize("bad, msg", [
    ({"backbone": "tiny"}, "library:model"),
    ({"shard_size": 0}, "shard_size"),
    ({"inputs": "tokens"}, "inputs must be"),
    ({"kind": "method"}, "kind must be"),
    ({"adapter": "no_colon"}, "adapter"),
    ({"method_options": {"x": object()}}, "JSON"),
])
def test_bad_specs_are_refused_with_a_reason(bad, msg):
    with pytest.raises(EngineError, match=msg):
        toy_spec(**bad)


def test_local_job_equals_direct_method_call_and_means(tmp_path):
    spec = toy_spec()
    res = run_job(spec, tmp_path / "job", progress=False)
    ref = direct(spec)
    assert res.num_samples == 40 and res.num_shards == 3
    assert res.computed == [0, 1, 2] and res.skipped == []
    for name in ("weights", "l0", "cosine"):
        np.testing.assert_allclose(res.load(name), ref[name], rtol=1e-5, atol=1e-6)
    # averages over images, not over batches / shards of unequal size (16, 16, 8)
    assert res.means["cosine"] == pytest.approx(float(ref["cosine"].astype(np.float64).mean()), rel=1e-6)
    assert res.means["l0"] == pytest.approx(float(ref["l0"].mean()))
    np.testing.assert_allclose(res.mean("weights"), ref["weights"].mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(res.load("label"), np.arange(40) % 3)
    assert "label" not in res.means  # dataset fields are carried, not averaged
    manifest = engine.read_manifest(tmp_path / "job")
    assert manifest["status"] == "complete" and manifest["spec_hash"] == spec.hash
    assert [s["status"] for s in manifest["shards"]] == ["done"] * 3
    assert all(len(s["checksums"]) == 4 for s in manifest["shards"])


def test_to_arrays_method_result_and_batch_invariance(tmp_path):
    spec = toy_spec(method="toy_parts")
    res = run_job(spec, tmp_path / "a", progress=False)
    ref = direct(spec)
    assert res.arrays["contributions"]["shape"] == [40, 8, 8]
    np.testing.assert_allclose(res.load("contributions"), ref["contributions"], rtol=1e-5, atol=1e-6)
    # other batch and shard sizes give the same arrays
    res2 = run_job(toy_spec(method="toy_parts", shard_size=7, batch_size=3), tmp_path / "b",
                   progress=False)
    np.testing.assert_allclose(res2.load("embedding"), res.load("embedding"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res2.load("contributions").sum(axis=1), res2.load("embedding"),
                               rtol=1e-5, atol=1e-6)


def test_adapter_by_import_path(tmp_path):
    spec = toy_spec(adapter=engine.callable_path(engine_toy.adapter_weights_only))
    assert spec.adapter == "engine_toy:adapter_weights_only"
    res = run_job(spec, tmp_path / "job", progress=False)
    assert set(res.arrays) == {"w", "label"}
    np.testing.assert_allclose(res.load("w"), direct(toy_spec())["weights"], rtol=1e-5, atol=1e-6)


def test_embeddings_job_without_method(tmp_path):
    res = run_job(toy_spec(method=None, fields=()), tmp_path / "job", progress=False)
    bb = interpcore.get_backbone("enginetoy:tiny", device="cpu")
    ds = interpcore.get_dataset("enginetoy", n=40)
    z = bb.encode_image([ds[i]["image"] for i in range(40)]).numpy()
    assert set(res.arrays) == {"embedding"}
    np.testing.assert_allclose(res.load("embedding"), z, rtol=1e-5, atol=1e-6)


def test_to_arrays_protocol_keeps_only_per_image_arrays():
    import torch

    out = engine.to_arrays({"a": torch.ones(4, 2), "mean": 3.0, "names": ["x"] * 4,
                            "b": [1, 2, 3, 4], "skip": None, "other": np.zeros(3)}, 4)
    assert set(out) == {"a", "b"}
    assert out["a"].dtype == np.float32 and out["b"].tolist() == [1, 2, 3, 4]
    with pytest.raises(EngineError, match="no per-image arrays"):
        engine.to_arrays({"mean": 1.0}, 4)
    with pytest.raises(EngineError, match="to_arrays"):
        engine.to_arrays(object(), 4)


def test_rerun_skips_done_shards_and_recomputes_damaged_ones(tmp_path):
    spec = toy_spec()
    out = tmp_path / "job"
    first = run_job(spec, out, progress=False)
    records = {p.name: json.loads(p.read_text()) for p in (out / "records").iterdir()}
    again = run_job(spec, out, progress=False)
    assert again.computed == [] and again.skipped == [0, 1, 2]
    # damage shard 1's weights (same size, other bytes) and delete shard 2's record
    w1 = out / "arrays" / "weights" / "shard-00001.npy"
    data = bytearray(w1.read_bytes())
    data[-1] ^= 0xFF
    w1.write_bytes(bytes(data))
    (out / "records" / "shard-00002.json").unlink()
    third = run_job(spec, out, progress=False)
    assert third.computed == [1, 2] and third.skipped == [0]
    rec0 = json.loads((out / "records" / "shard-00000.json").read_text())
    rec1 = json.loads((out / "records" / "shard-00001.json").read_text())
    assert rec0 == records["shard-00000.json"]  # untouched
    assert rec1["computations"] == 2 and rec1["run_id"] != records["shard-00001.json"]["run_id"]
    np.testing.assert_array_equal(third.load("weights"), first.load("weights"))


def test_a_different_job_refuses_the_folder_unless_overwrite(tmp_path):
    out = tmp_path / "job"
    run_job(toy_spec(), out, progress=False)
    other = toy_spec(method_options={"threshold": 0.3})
    with pytest.raises(EngineError, match="different job"):
        run_job(other, out, progress=False)
    assert engine.read_manifest(out)["spec_hash"] == toy_spec().hash  # nothing was mixed
    res = run_job(other, out, progress=False, overwrite=True)
    assert res.computed == [0, 1, 2]
    assert engine.read_manifest(out)["spec_hash"] == other.hash


def test_unknown_names_fail_before_writing_and_engine_name_is_checked(tmp_path):
    with pytest.raises(interpcore.UnknownNameError, match="toy_sparse"):
        run_job(toy_spec(method="toy_sparce"), tmp_path / "job", progress=False)
    with pytest.raises(interpcore.InterpError, match="Did you mean: ray"):
        run_job(toy_spec(), tmp_path / "job2", engine="rayy", progress=False)


def test_killed_job_resumes_without_recomputing_finished_shards(tmp_path):
    """SIGKILL a job half way (in a subprocess), rerun it, and check which shards ran."""
    out = tmp_path / "job"
    spec = toy_spec(shard_size=8, batch_size=8)  # 5 shards
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from interpcore.engine import JobSpec, run_job
        run_job(JobSpec.from_dict({spec.to_dict()!r}), {str(out)!r}, progress=False)
    """)
    env = dict(os.environ, INTERP_TEST_SLEEP="1.0", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            done = list((out / "records").glob("*.json")) if (out / "records").exists() else []
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {p.name: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert 2 <= len(before) < 5
    assert engine.read_manifest(out)["status"] == "running"  # killed: never marked complete
    res = run_job(spec, out, progress=False)
    done_ids = sorted(int(n[6:11]) for n in before)
    assert res.skipped == done_ids
    assert res.computed == sorted(set(range(5)) - set(done_ids))
    for name, rec in before.items():  # the finished shards were not touched
        assert json.loads((out / "records" / name).read_text()) == rec
    np.testing.assert_allclose(res.load("weights"), direct(spec)["weights"], rtol=1e-5, atol=1e-6)


def _write_images(n=12, size=20):
    ds = engine_toy.ToyDataset(n=n, size=size)
    return [ds[i]["image"] for i in range(n)]


def test_image_folder_and_webdataset_tars_read_the_same_images(tmp_path):
    images = _write_images()
    folder = tmp_path / "folder"
    for i, im in enumerate(images):
        cls = ["cat", "dog"][i % 2]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        im.save(folder / cls / f"img{i:03d}.png")
    # two tar shards; the folder sorts by class then name, so order the tars the same way
    order = sorted(range(len(images)), key=lambda i: (i % 2, i))
    for t, chunk in enumerate((order[:7], order[7:])):
        with tarfile.open(tmp_path / f"data-{t:03d}.tar", "w") as tar:
            for i in chunk:
                p = tmp_path / f"s{i:03d}.png"
                images[i].save(p)
                tar.add(p, arcname=f"sample{i:03d}.png")
                lab = tmp_path / f"s{i:03d}.cls"
                lab.write_text(str(i % 2))
                tar.add(lab, arcname=f"sample{i:03d}.cls")
    base = dict(method="toy_sparse", dataset_options={}, shard_size=5)
    a = run_job(toy_spec(dataset=f"folder:{folder}", **base), tmp_path / "ja", progress=False)
    b = run_job(toy_spec(dataset=f"webdataset:{tmp_path}/data-*.tar", **base), tmp_path / "jb",
                progress=False)
    assert a.num_samples == b.num_samples == 12
    np.testing.assert_array_equal(a.load("label"), b.load("label"))
    np.testing.assert_array_equal(a.load("weights"), b.load("weights"))
    ref = direct(toy_spec(dataset_options={"n": 12}))["weights"][order]
    np.testing.assert_allclose(a.load("weights"), ref, rtol=1e-5, atol=1e-6)


def _tar(path: Path, members: dict) -> Path:
    """A tar shard holding ``{name: bytes}`` in that order."""
    import io

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(EngineError, match="image folder not found"):
        engine.open_dataset(toy_spec(dataset=f"folder:{tmp_path}/nope", dataset_options={}))
    with pytest.raises(EngineError, match="no tar shards match"):
        engine.open_dataset(toy_spec(dataset=f"webdataset:{tmp_path}/none-*.tar",
                                     dataset_options={}))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(EngineError, match="tar shard not found: .*missing-0.tar"):
        engine.open_dataset(toy_spec(dataset=f"webdataset:{bad},{tmp_path}/missing-{{0..1}}.tar",
                                     dataset_options={}))
    with pytest.raises(EngineError, match="bad.tar is not a readable tar shard") as err:
        engine.open_dataset(toy_spec(dataset=f"webdataset:{bad}", dataset_options={}))
    assert "\n" not in str(err.value)
    # a tar cut off in the middle of a member: the same one-line error
    images = _write_images(n=3)
    whole = _tar(tmp_path / "whole.tar", {f"s{i}.png": _png(im) for i, im in enumerate(images)})
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2 + 100])
    with pytest.raises(EngineError, match="cut.tar is not a readable tar shard"):
        engine.open_dataset(toy_spec(dataset=f"webdataset:{cut}", dataset_options={}))
    # a member that is not the image its name says: the member is named
    junk = _tar(tmp_path / "junk.tar", {"a.png": _png(images[0]), "b.png": b"no png here"})
    ds = interpcore.get_dataset(f"webdataset:{junk}")
    assert len(ds) == 2 and ds[0]["image"].size == images[0].size
    with pytest.raises(EngineError, match=r"junk.tar:b.png cannot be decoded"):
        ds[1]


def test_webdataset_skips_samples_without_an_image_and_counts_them(tmp_path):
    images = _write_images(n=4)
    tar = _tar(tmp_path / "mixed-000.tar", {
        "a.png": _png(images[0]), "a.cls": b"1",
        "b.txt": b"a caption but no image",
        "c.jpg.json": b"{}",
        "d.png": _png(images[1]), "d.cls": b"0", "d.txt": b" two circles ",
    })
    with pytest.warns(UserWarning, match="2 sample\\(s\\) without an image skipped"):
        ds = interpcore.get_dataset(f"webdataset:{tar}")
    assert (len(ds), ds.skipped) == (2, 2)
    assert [ds[i]["key"] for i in range(2)] == ["a", "d"]
    assert (ds[0]["label"], ds[1]["label"], ds[1]["caption"]) == (1, 0, "two circles")
    assert np.array_equal(np.asarray(ds[1]["image"]), np.asarray(images[1].convert("RGB")))


def test_webdataset_random_access_matches_streaming_order(tmp_path):
    images = _write_images(n=9)
    for t in range(3):  # shards-000..002, 3 samples each; listed by braces and by a comma
        _tar(tmp_path / f"shards-{t:03d}.tar",
             {f"k{3 * t + j}.png": _png(images[3 * t + j]) for j in range(3)})
    pattern = f"{tmp_path}/shards-{{000..001}}.tar,{tmp_path}/shards-002.tar"
    ds = interpcore.get_dataset(f"webdataset:{pattern}")
    assert ds.counts == [3, 3, 3]
    in_order = [ds[i]["key"] for i in range(9)]
    assert in_order == [f"k{i}" for i in range(9)]
    jumps = [7, 2, 8, 0, 4, 4, 3]  # backwards, across tars, the same index twice
    assert [ds[i]["key"] for i in jumps] == [f"k{i}" for i in jumps]
    for i in jumps:
        assert np.array_equal(np.asarray(ds[i]["image"]), np.asarray(images[i].convert("RGB")))
    with pytest.raises(IndexError):
        ds[9]


def test_folder_and_webdataset_are_core_datasets():
    reg = interpcore.get_registry()
    for name in ("folder", "webdataset"):
        assert reg.entry("dataset", name).plugin == "interpcore"
    with pytest.raises(EngineError, match="needs shard paths"):
        interpcore.get_dataset("webdataset")


def test_load_array_refuses_an_unfinished_job(tmp_path):
    out = tmp_path / "job"
    run_job(toy_spec(), out, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    m["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match="not complete"):
        engine.load_array(out, "weights")


def test_engine_options_decorator_adds_the_cli_options():
    import click
    from click.testing import CliRunner

    @click.command()
    @engine.engine_options
    def cmd(engine, address, workers, shard_size, job_dir, overwrite):
        click.echo(json.dumps([engine, address, workers, shard_size, job_dir, overwrite]))

    r = CliRunner().invoke(cmd, ["--engine", "ray", "--address", "auto", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == ["ray", "auto", 2, 256, None, False]
    r = CliRunner().invoke(cmd, ["--engine", "spark"])
    assert r.exit_code != 0 and "spark" in r.output


def test_engine_module_does_not_import_torch():
    code = "import sys, interpcore.engine; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _interp(args, tmp_path):
    code = "import sys; from interpcore.cli import main; main(sys.argv[1:])"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", INTERP_QUIET="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


def test_interp_job_cli_runs_resumes_and_reports(tmp_path):
    out = tmp_path / "run"
    args = ["job", "run", "--dataset", "enginetoy", "-D", "n=30", "--backbone", "enginetoy:tiny",
            "--method", "toy_sparse", "-M", "threshold=0.05", "--plugin", "engine_toy",
            "--shard-size", "10", "--out", str(out), "--json"]
    r = _interp(args, tmp_path)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["computed"] == [0, 1, 2] and first["num_samples"] == 30
    spec = engine.read_manifest(out)["spec"]
    assert spec["method_options"] == {"threshold": 0.05}  # KEY=VALUE parsed as JSON
    run = json.loads((out / "run.json").read_text())
    table = run["sections"][0]["tables"][0]
    assert [row[0] for row in table["rows"]] == ["weights", "l0", "cosine", "label"]
    r = _interp(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == [0, 1, 2]
    r = _interp(["job", "status", str(out)], tmp_path)
    assert r.returncode == 0 and "status complete: 3/3 shards, 30 images" in r.stdout
    bad = _interp(args[:-3] + ["--out", str(out), "-M", "threshold=0.5"], tmp_path)
    assert bad.returncode == 1
    assert "holds the outputs of a different job" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 2  # one error line + the --debug hint


def test_ray_engine_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(EngineError, match=r"pip install 'interpcore\[ray\]'"):
        run_job(toy_spec(), tmp_path / "job", engine="ray", progress=False)
    assert not (tmp_path / "job").exists()  # refused before writing anything


def test_ray_workers_get_the_plugin_folders_on_their_path():
    from interpcore.engine import ray as engine_ray

    env = engine_ray._worker_env(toy_spec(adapter="engine_toy:adapter_weights_only"))
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(TESTS)
    assert engine_ray._worker_env(toy_spec(plugins=())).get("PYTHONPATH") in (None, os.environ.get("PYTHONPATH"))
