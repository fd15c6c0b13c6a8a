"""FALCON's commands: the probe features always come from a
sharded, resumable engine job and give the same groups, features and explanations as the
in-process path; a rerun computes no shard."""

from __future__ import annotations

import json

import pytest

from interpcore.cache import load_tensors
from interpcore.engine import read_manifest
from test_falcon import cli  # noqa: F401 - the fixture: the toy colour world's CLI

torch = pytest.importorskip("torch")


def _features(folder):
    return load_tensors(folder / "features.safetensors")[0]["features"]


def test_find_groups_through_a_job_equals_in_process_and_resumes(cli, tmp_path):  # noqa: F811
    r = cli("find-groups", "--out", str(tmp_path / "here"), "--json")
    assert r.exit_code == 0, r.output
    job = tmp_path / "job"
    r2 = cli("find-groups", "--out", str(tmp_path / "viajob"), "--job-dir", str(job),
             "--shard-size", "16", "--json")
    assert r2.exit_code == 0, r2.output
    here, viajob = json.loads(r.output), json.loads(r2.output)
    assert [(g["features"], g["images"]) for g in here["groups"]] == \
        [(g["features"], g["images"]) for g in viajob["groups"]]
    torch.testing.assert_close(_features(tmp_path / "here"), _features(tmp_path / "viajob"))
    import interpcore
    from interp_falcon import steps

    streamed = steps.extract_features(interpcore.get_backbone("toyf:cnn"),  # in this process
                                      interpcore.get_dataset("toy-colours"), batch_size=32)
    torch.testing.assert_close(_features(tmp_path / "viajob"), streamed)
    m = read_manifest(job)
    assert m["status"] == "complete" and m["num_samples"] == 45
    assert m["last_run"]["computed"] == [0, 1, 2]
    r3 = cli("find-groups", "--job-dir", str(job), "--shard-size", "16")
    assert r3.exit_code == 0, r3.output
    assert read_manifest(job)["last_run"]["computed"] == []  # the rerun computed nothing


def test_explain_through_a_job_gives_the_same_words(cli, tmp_path):  # noqa: F811
    args = ("explain", "--pool", "toy-captions", "--group", "2", "--json")
    r = cli(*args)
    r2 = cli(*args, "--job-dir", str(tmp_path / "job"))
    assert r.exit_code == 0 and r2.exit_code == 0, r.output + r2.output
    words = [[g["id"], g["words"]] for g in json.loads(r.output)["groups"] if g["words"]]
    assert words and words == \
        [[g["id"], g["words"]] for g in json.loads(r2.output)["groups"] if g["words"]]
    assert read_manifest(tmp_path / "job")["status"] == "complete"


def test_find_groups_keeps_its_job_in_the_run_folder_and_a_killed_one_resumes(cli, tmp_path):  # noqa: F811
    """Without --job-dir the features' job is OUT/job: the rerun computes nothing, and one
    whose shard record is gone (killed before it was written) recomputes only that shard."""
    out = tmp_path / "run"
    first = cli("find-groups", "--out", str(out), "--shard-size", "16", "--json")
    assert first.exit_code == 0, first.output
    assert read_manifest(out / "job")["last_run"]["computed"] == [0, 1, 2]
    assert cli("find-groups", "--out", str(out), "--shard-size", "16").exit_code == 0
    assert read_manifest(out / "job")["last_run"]["computed"] == []
    (out / "job" / "records" / "shard-00002.json").unlink()
    again = cli("find-groups", "--out", str(out), "--shard-size", "16", "--json")
    assert again.exit_code == 0, again.output
    assert read_manifest(out / "job")["last_run"]["computed"] == [2]
    groups = [(g["features"], g["images"]) for g in json.loads(first.output)["groups"]]
    assert groups == [(g["features"], g["images"]) for g in json.loads(again.output)["groups"]]
