"""Every PRS / TextSpan dataset command goes through a job folder: run twice, the second run
computes no shard and prints the same numbers; a job that lost shards (a kill) recomputes
only those; ``--engine ray`` gives the numbers of the local engine."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import interpcore
from interpcore.engine import read_manifest

sys.path.insert(0, str(Path(__file__).parent))
from test_prs_cli import _Plugin  # noqa: E402  (the tiny CLIP and 16-image dataset)

#: 16 images in shards of 4
SHARDS = ["--shard-size", "4"]


@pytest.fixture
def cli(plugin_cli):
    invoke = plugin_cli(_Plugin, "prs-test-tiny", "tinyprs")

    def run(group, cmd, *args):
        return invoke(group, cmd, "--backbone", "tinyprs:clip", "--dataset", "tinyprs-data",
                      "--batch-size", "8", *SHARDS, *args)

    return run


def _pool(tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("grass\nwater\na circle\na square\nred\nblue\nsnow\n")
    return str(pool)


def _commands(tmp_path):
    """(name, command, args, job folders under --out) of every dataset-level command."""
    pool = _pool(tmp_path)
    return [
        ("decompose", ("prs", "decompose"), ("--layers", "2"), ["job"]),
        ("ablate", ("prs", "ablate"), ("--templates", "a photo of a {}.",), ["job"]),
        ("spurious", ("prs", "spurious"), ("--heads", "2.1", "--probe", "--train-limit", "8"),
         ["job", "job-train"]),
        ("search", ("prs", "search"), ("--heads", "2.0,2.3", "-k", "3"), ["job"]),
        ("segment", ("prs", "segment"), ("--figures", "0"), ["job"]),
        ("textspan", ("textspan", "run"), ("--pool", pool, "--layers", "2", "--texts-per-head",
                                           "2", "--rank", "8"), ["job"]),
    ]


def _results(stdout: str) -> dict:
    data = json.loads(stdout)
    data.pop("figure", None)
    return data


@pytest.mark.parametrize("name", ["decompose", "ablate", "spurious", "search", "segment",
                                  "textspan"])
def test_each_command_twice_reuses_its_job(cli, tmp_path, name):
    _, cmd, args, jobs = next(c for c in _commands(tmp_path) if c[0] == name)
    out = tmp_path / "out"
    first = cli(*cmd, *args, "--out", str(out), "--json")
    assert first.exit_code == 0, first.output
    for job in jobs:
        m = read_manifest(out / job)
        assert m["status"] == "complete"
        assert m["last_run"]["computed"] == list(range(m["shards_total"]))
    again = cli(*cmd, *args, "--out", str(out), "--json")
    assert again.exit_code == 0, again.output
    for job in jobs:
        m = read_manifest(out / job)
        assert m["last_run"]["computed"] == [], job
        assert m["last_run"]["skipped"] == list(range(m["shards_total"]))
    assert "(0 of 4 shard(s) computed, 4 reused)" in again.stderr
    assert _results(again.stdout) == _results(first.stdout)


def test_a_job_that_lost_shards_recomputes_only_those(cli, tmp_path):
    """As a killed run leaves it: the records of shards 1 and 3 are missing (a shard counts as
    done only once its record is written), so the rerun computes exactly those two."""
    out = tmp_path / "out"
    first = cli("prs", "ablate", "--templates", "a photo of a {}.", "--out", str(out), "--json")
    assert first.exit_code == 0, first.output
    arrays = {n: np.load(out / "job" / "arrays" / "attn" / f"shard-0000{n}.npy") for n in range(4)}
    for n in (1, 3):
        (out / "job" / "records" / f"shard-0000{n}.json").unlink()
    again = cli("prs", "ablate", "--templates", "a photo of a {}.", "--out", str(out), "--json")
    assert again.exit_code == 0, again.output
    m = read_manifest(out / "job")
    assert m["last_run"]["computed"] == [1, 3] and m["last_run"]["skipped"] == [0, 2]
    assert "2 of 4 shard(s) computed" in again.stderr
    assert _results(again.stdout) == _results(first.stdout)
    for n, a in arrays.items():
        np.testing.assert_array_equal(np.load(out / "job" / "arrays" / "attn" / f"shard-0000{n}.npy"), a)


def test_job_dir_and_the_default_cache_folder(cli, tmp_path):
    """--job-dir names the folder (a second job of the command gets a suffix); without it
    and --out the job lives in the user cache and is reused from there."""
    jd = tmp_path / "jobs" / "wb"
    r = cli("prs", "spurious", "--heads", "2.1", "--probe", "--train-limit", "8",
            "--job-dir", str(jd))
    assert r.exit_code == 0, r.output
    assert read_manifest(jd)["status"] == read_manifest(f"{jd}-train")["status"] == "complete"
    r = cli("prs", "decompose", "--json")
    assert r.exit_code == 0, r.output
    folder = Path(json.loads(r.stdout)["store"])
    assert folder.is_relative_to(tmp_path / "cache")  # plugin_cli's private cache
    r = cli("prs", "decompose", "--json")
    assert read_manifest(folder)["last_run"]["computed"] == []


# -- Ray: the same numbers as the local engine ------------------------------------------


def _shapes_clip_or_skip():
    reg = interpcore.get_registry()
    if "shapes" not in reg.names("backbone") or "shapes" not in reg.names("dataset"):
        pytest.skip("needs the shapes plugins (trained shapes CLIP)")
    try:
        interpcore.get_backbone("shapes:clip-vit", device="cpu")
    except interpcore.InterpError as exc:
        pytest.skip(f"shapes:clip-vit is not available: {exc}")


@pytest.mark.slow
def test_prs_decompose_on_ray_equals_the_local_engine(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    _shapes_clip_or_skip()
    from click.testing import CliRunner

    from interpcore import cli as icli
    from interpcore.engine import load_array
    from interpcore.engine import ray as engine_ray

    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    icli._add_plugin_commands()
    base = ["-q", "prs", "decompose", "-b", "shapes:clip-vit", "-d", "shapes", "-n", "48",
            "--batch-size", "8", "--shard-size", "12", "--layers", "2", "--device", "cpu", "--json"]
    runner = CliRunner()
    local = runner.invoke(icli.cli, base + ["--job-dir", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    engine_ray.start_local_cluster(num_cpus=2)
    try:
        dist = runner.invoke(icli.cli, base + ["--job-dir", str(tmp_path / "ray"), "--engine", "ray",
                                               "--workers", "2"])
        assert dist.exit_code == 0, dist.output
    finally:
        import ray

        engine_ray._pools.clear()
        ray.shutdown()
    m = read_manifest(tmp_path / "ray")
    assert m["last_run"]["engine"] == "ray" and m["last_run"]["computed"] == [0, 1, 2, 3]
    workers = {json.loads(p.read_text())["worker"] for p in (tmp_path / "ray" / "records").glob("*.json")}
    assert len(workers) == 2
    for name in ("embedding", "embed", "attn", "attn_cls", "mlps", "ln_bias", "heads", "norm", "label"):
        np.testing.assert_allclose(load_array(tmp_path / "ray", name), load_array(tmp_path / "local", name),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    a, b = json.loads(local.stdout), json.loads(dist.stdout)
    assert a["mean_norm"] == b["mean_norm"] and a["images"] == b["images"] == 48
