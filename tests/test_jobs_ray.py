"""``--engine ray`` gives the same numbers as the local engine for SpLiCE's and FALCON's
dataset commands, on a local two-worker Ray cluster bound to 127.0.0.1 and the shapes models
(installed plugins, so Ray workers build them by name). Skipped without Ray or the shapes
models' weights."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

import interpcore  # noqa: E402
from interpcore.engine import ray as engine_ray  # noqa: E402
from interpcore.engine import read_manifest  # noqa: E402

pytestmark = pytest.mark.slow


def _shapes_models() -> bool:
    try:
        interpcore.get_backbone("shapes:clip-vit", device="cpu")
        interpcore.get_backbone("shapes:resnet", device="cpu")
    except interpcore.InterpError:
        return False
    return True


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    if not _shapes_models():
        pytest.skip("the shapes models' weights are not available")
    from click.testing import CliRunner

    from interpcore.cli import _add_plugin_commands, cli as main

    mp = pytest.MonkeyPatch()
    mp.setenv("INTERP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # workers get it too
    engine_ray.start_local_cluster(num_cpus=2)
    _add_plugin_commands()
    runner = CliRunner()

    def invoke(*args):
        res = runner.invoke(main, ["-q", *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res

    yield invoke
    engine_ray._pools.clear()
    ray.shutdown()
    mp.undo()


def _workers(job) -> int:
    return len({json.loads(p.read_text())["worker"] for p in (job / "records").glob("*.json")})


def test_splice_classes_on_ray_equal_the_local_engine(cli, tmp_path):
    args = ("splice", "classes", "-b", "shapes:clip-vit", "-d", "shapes", "-n", "64",
            "--shard-size", "16", "--json")
    local = json.loads(cli(*args, "--job-dir", str(tmp_path / "local")).output)
    dist = json.loads(cli(*args, "--job-dir", str(tmp_path / "ray"), "--engine", "ray",
                          "--workers", "2").output)
    assert _workers(tmp_path / "ray") == 2
    assert read_manifest(tmp_path / "ray")["last_run"]["engine"] == "ray"
    assert local["count"] == dist["count"] == 64
    assert dist["mean_l0"] == pytest.approx(local["mean_l0"])
    assert dist["mean_cosine"] == pytest.approx(local["mean_cosine"], rel=1e-5)
    for a, b in zip(local["classes"], dist["classes"], strict=True):
        assert (a["name"], a["count"]) == (b["name"], b["count"])
        wa = {c["concept"]: c["weight"] for c in a["concepts"]}
        wb = {c["concept"]: c["weight"] for c in b["concepts"]}
        assert wa.keys() == wb.keys()
        assert all(wb[k] == pytest.approx(wa[k], rel=1e-3, abs=1e-5) for k in wa)


def test_falcon_find_groups_on_ray_finds_the_local_groups(cli, tmp_path):
    from interpcore.cache import load_tensors

    args = ("falcon", "find-groups", "-b", "shapes:resnet", "-d", "shapes", "--limit", "96",
            "--sigma", "3", "--min-images", "2", "--max-images", "2", "--shard-size", "32",
            "--json")
    local = json.loads(cli(*args, "--out", str(tmp_path / "local")).output)
    dist = json.loads(cli(*args, "--out", str(tmp_path / "ray"), "--engine", "ray",
                          "--workers", "2").output)
    assert _workers(tmp_path / "ray" / "job") == 2
    groups = [(g["features"], g["images"]) for g in local["groups"]]
    assert groups and groups == [(g["features"], g["images"]) for g in dist["groups"]]
    f_local = load_tensors(tmp_path / "local" / "features.safetensors")[0]["features"]
    f_ray = load_tensors(tmp_path / "ray" / "features.safetensors")[0]["features"]
    assert f_local.shape == f_ray.shape and float((f_local - f_ray).abs().max()) < 1e-4
