"""The Ray engine on a local two-worker cluster bound to 127.0.0.1: the same arrays and
averages as the single-process path for a toy decomposer, PRS and SpLiCE, and a job that
fails half way resumes without recomputing the shards that were done.

Skipped when Ray is not installed (``pip install 'interpcore[ray]'``). The cluster is
started once for the module (num_cpus=2) and the model actors are reused between jobs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import interpcore  # noqa: E402
from interpcore import engine  # noqa: E402
from interpcore.engine import ray as engine_ray  # noqa: E402
from interpcore.engine import JobSpec, run_job  # noqa: E402

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
import engine_toy  # noqa: E402
from engine_toy import TINY_CLIP  # noqa: E402

interpcore.get_registry().register_plugin(engine_toy, "engine_toy")

SHAPES_WEIGHTS = Path(interpcore.__file__).parents[1] / "backbones" / "interp_shapes_models" / "weights"


@pytest.fixture(scope="module")
def cluster():
    engine_ray.start_local_cluster(num_cpus=2)
    resources = ray.cluster_resources()
    assert "node:127.0.0.1" in resources, resources  # loopback only
    yield resources
    engine_ray._pools.clear()
    ray.shutdown()


def _has(kind: str, name: str) -> bool:
    reg = interpcore.get_registry()
    return name in reg.names(kind)


def _clip_backbone(tmp_path_factory) -> tuple[str, dict]:
    """shapes:clip-vit when its trained weights exist, else a tiny random open_clip CLIP
    saved to a checkpoint so that every worker loads the same weights by name."""
    if _has("backbone", "shapes") and any(SHAPES_WEIGHTS.glob("*clip*")):
        return "shapes:clip-vit", {}
    if not _has("backbone", "open_clip"):
        pytest.skip("no open_clip backbone plugin")
    import open_clip
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.getbasetemp() / "engine_tiny_clip.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_CLIP)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return "open_clip:engine-tiny", {"pretrained": str(path), "model_config": TINY_CLIP}


def _dataset(n: int) -> tuple[str, dict]:
    if _has("dataset", "shapes"):
        return "shapes", {"n": n}
    return "enginetoy", {"n": n}


def _assert_same(a, b, names, rtol=1e-4, atol=1e-5):
    for name in names:
        np.testing.assert_allclose(a.load(name), b.load(name), rtol=rtol, atol=atol, err_msg=name)
    for name, value in a.means.items():
        if isinstance(value, float):
            assert b.means[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def _workers(out: Path) -> set:
    return {json.loads(p.read_text())["worker"] for p in (out / "records").glob("*.json")}


def test_ray_two_workers_match_the_local_engine(cluster, tmp_path):
    spec = JobSpec(dataset="enginetoy", backbone="enginetoy:tiny", method="toy_sparse",
                   plugins=("engine_toy",), dataset_options={"n": 200}, shard_size=25,
                   batch_size=25)
    local = run_job(spec, tmp_path / "local", progress=False)
    dist = run_job(spec, tmp_path / "ray", engine="ray", num_workers=2, progress=False)
    assert dist.workers == 2 and dist.computed == list(range(8))
    assert len(_workers(tmp_path / "ray")) == 2  # both worker processes computed shards
    _assert_same(local, dist, ["weights", "l0", "cosine", "label"])
    assert sorted(p.name for p in (tmp_path / "ray" / "arrays").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local" / "arrays").iterdir())


def test_ray_reads_webdataset_tars_like_the_local_engine(cluster, tmp_path):
    """Each Ray reader opens the tars itself and gets shards out of order, some across two
    tars (shards of 15, tars of 20): the arrays are the local engine's."""
    import io
    import tarfile

    ds = engine_toy.ToyDataset(n=60, size=20)
    for t in range(3):
        with tarfile.open(tmp_path / f"toy-{t}.tar", "w") as tar:
            for i in range(20 * t, 20 * t + 20):
                buf = io.BytesIO()
                ds[i]["image"].save(buf, format="PNG")
                for name, data in ((f"{i:03d}.png", buf.getvalue()), (f"{i:03d}.cls", b"%d" % (i % 3))):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    spec = JobSpec(dataset=f"webdataset:{tmp_path}/toy-*.tar", backbone="enginetoy:tiny",
                   method="toy_sparse", plugins=("engine_toy",), shard_size=15, batch_size=15)
    local = run_job(spec, tmp_path / "local", progress=False)
    dist = run_job(spec, tmp_path / "ray", engine="ray", num_workers=2, progress=False)
    assert dist.num_samples == 60 and len(_workers(tmp_path / "ray")) == 2
    np.testing.assert_array_equal(dist.load("label"), np.arange(60) % 3)
    _assert_same(local, dist, ["weights", "label"])


def test_ray_job_failing_half_way_resumes_without_recomputing(cluster, tmp_path):
    spec = JobSpec(dataset="enginetoy", backbone="enginetoy:tiny", method="toy_sparse",
                   plugins=("engine_toy",), dataset_options={"n": 160}, shard_size=20,
                   batch_size=20)  # 8 shards
    out = tmp_path / "job"
    # reading sample 80 or later fails: shards 0-3 get done, then the job stops
    engine_toy.FAIL_MARKER.write_text("80")
    try:
        with pytest.raises(interpcore.InterpError, match="toy read failure injected"):
            run_job(spec, out, engine="ray", num_workers=2, progress=False)
    finally:
        engine_toy.FAIL_MARKER.unlink()
    before = {p.name: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    done = sorted(r["shard"] for r in before.values())
    assert done == [0, 1, 2, 3], sorted(before)
    assert engine.read_manifest(out)["status"] == "interrupted"

    res = run_job(spec, out, engine="ray", num_workers=2, progress=False)
    assert res.skipped == done
    assert res.computed == sorted(set(range(8)) - set(done))
    for name, rec in before.items():  # finished shards untouched: same run, same checksums
        assert json.loads((out / "records" / name).read_text()) == rec
    local = run_job(spec, tmp_path / "local", progress=False)
    _assert_same(local, res, ["weights", "l0", "cosine"])


@pytest.mark.skipif(not _has("decomposer", "prs"), reason="the prs plugin is not installed")
def test_prs_dataset_decomposition_on_ray_equals_single_process(cluster, tmp_path, tmp_path_factory):
    backbone, bopts = _clip_backbone(tmp_path_factory)
    dataset, dopts = _dataset(256)
    spec = JobSpec(dataset=dataset, dataset_options=dopts, backbone=backbone,
                   backbone_options=bopts, method="prs", call_options={"normalize": True},
                   plugins=("engine_toy",), shard_size=64, batch_size=32)
    dist = run_job(spec, tmp_path / "ray", engine="ray", num_workers=2, progress=False)
    assert len(_workers(tmp_path / "ray")) == 2
    # the plugin's own single-process dataset path (PRS's store)
    bb = interpcore.get_backbone(backbone, device="cpu", **bopts)
    prs = interpcore.get_decomposer("prs", bb)
    ds = interpcore.get_dataset(dataset, **dopts)
    from interp_prs.decompose import decompose_dataset

    store = decompose_dataset(prs, ds, tmp_path / "store", batch_size=32)
    for name in ("embedding", "embed", "attn", "mlps", "heads", "ln_bias", "norm"):
        np.testing.assert_allclose(dist.load(name), store.array(name, mmap=False),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
    # contributions add up to the unit embedding, image by image
    total = (dist.load("embed") + dist.load("attn").sum(1) + dist.load("mlps").sum(1)
             + dist.load("ln_bias"))
    unit = dist.load("embedding") / dist.load("norm")[:, None]
    np.testing.assert_allclose(total, unit, rtol=1e-4, atol=1e-5)
    local = run_job(spec, tmp_path / "local", progress=False)
    _assert_same(local, dist, ["attn", "heads", "mlps", "std"])


@pytest.mark.skipif(not _has("decomposer", "splice"), reason="the splice plugin is not installed")
def test_splice_dataset_decomposition_on_ray_equals_single_process(cluster, tmp_path, tmp_path_factory):
    backbone, bopts = _clip_backbone(tmp_path_factory)
    dataset, dopts = _dataset(256)
    vocab = "shapes" if _has("vocabulary", "shapes") else None
    if vocab is None:
        pytest.skip("no 'shapes' vocabulary registered")
    spec = JobSpec(dataset=dataset, dataset_options=dopts, backbone=backbone,
                   backbone_options=bopts, method="splice",
                   method_options={"vocabulary": vocab, "l1_penalty": 0.25,
                                   "mean_dataset": dataset, "mean_split": "test",
                                   "mean_limit": 128},
                   plugins=("engine_toy",), shard_size=64, batch_size=64)
    local = run_job(spec, tmp_path / "local", progress=False)
    dist = run_job(spec, tmp_path / "ray", engine="ray", num_workers=2, progress=False)
    assert len(_workers(tmp_path / "ray")) == 2
    names = [n for n in ("weights", "l0", "cosine") if n in local.arrays]
    assert names, f"splice gave no weights/l0/cosine arrays: {sorted(local.arrays)}"
    _assert_same(local, dist, names, rtol=1e-3, atol=1e-4)
