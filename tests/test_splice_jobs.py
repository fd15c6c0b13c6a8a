"""SpLiCE's dataset commands and functions run as engine jobs: every run leaves a job folder,
a rerun computes no shard and prints the same numbers, a killed run recomputes only its
missing shards, and the averages read back from the job equal the in-process path's (the
reference's streaming loop, still used for DataLoaders and hand-built datasets). Image means
over a named dataset are an embedding job too."""

from __future__ import annotations

import json

import pytest

from interpcore.engine import read_manifest
from test_splice_cli import TOY, interp  # noqa: F401 - the fixture: the toy CLIP's CLI

torch = pytest.importorskip("torch")

ARGS = ("-d", "toy-colours", "-n", "20", "--shard-size", "8", "--json", *TOY)


def _same_output(a: dict, b: dict) -> None:
    """Two runs' JSON agree on everything but the time they took."""
    assert a == b | {"seconds": a["seconds"]}


def test_dataset_twice_reuses_the_job_and_prints_the_same_numbers(interp, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    first = interp("splice", "dataset", *ARGS, "--out", str(out))
    assert first.exit_code == 0, first.output
    m = read_manifest(out / "job")
    assert m["status"] == "complete" and m["last_run"]["computed"] == [0, 1, 2]
    again = interp("splice", "dataset", *ARGS, "--out", str(out))
    assert again.exit_code == 0, again.output
    assert read_manifest(out / "job")["last_run"]["computed"] == []
    a, b = json.loads(first.output), json.loads(again.output)
    _same_output(a, b)
    assert a["job_dir"] == str(out / "job") and a["count"] == 20


def test_classes_twice_and_a_killed_job_recomputes_only_its_missing_shards(interp, tmp_path):  # noqa: F811
    job = tmp_path / "job"
    args = ("splice", "classes", *ARGS, "--job-dir", str(job))
    first = interp(*args)
    assert first.exit_code == 0, first.output
    assert interp(*args).exit_code == 0
    assert read_manifest(job)["last_run"]["computed"] == []
    (job / "records" / "shard-00001.json").unlink()  # as if killed before shard 1 was recorded
    resumed = interp(*args)
    assert resumed.exit_code == 0, resumed.output
    m = read_manifest(job)
    assert m["last_run"]["computed"] == [1] and m["last_run"]["skipped"] == [0, 2]
    _same_output(json.loads(first.output), json.loads(resumed.output))


def test_a_job_that_fails_half_way_keeps_its_shards(interp, tmp_path, monkeypatch):  # noqa: F811
    from interpcore.engine import worker

    job = tmp_path / "job"
    real = worker.ShardWorker.compute
    calls = []

    def fail_on_second(self, images, fields=None):
        if self.spec.method == "splice":  # not the image mean's job
            calls.append(len(images))
            if len(calls) == 2:
                raise RuntimeError("killed")
        return real(self, images, fields)

    monkeypatch.setattr(worker.ShardWorker, "compute", fail_on_second)
    killed = interp("splice", "dataset", *ARGS, "--job-dir", str(job))
    assert killed.exit_code != 0 and len(calls) == 2
    m = read_manifest(job)
    assert m["status"] == "interrupted" and m["shards_done"] == 1
    monkeypatch.setattr(worker.ShardWorker, "compute", real)
    done = interp("splice", "dataset", *ARGS, "--job-dir", str(job))
    assert done.exit_code == 0, done.output
    assert read_manifest(job)["last_run"]["computed"] == [1, 2]


@pytest.fixture
def model(toy_registry):
    import interp_splice as splice

    return splice.load("toy:clip", "toy-words", mean_dataset="toy-colours", l1_penalty=0.25)


@pytest.mark.parametrize("target", [None, "yellow"])
def test_the_job_path_gives_the_in_process_numbers(model, tmp_path, target):
    """Weights, L0, cosine, concept cosines and duality gaps, overall and per class, read
    back from the job equal the reference's streaming loop over the same images."""
    import interpcore
    from interp_splice.model import decompose_data

    ds = interpcore.get_dataset("toy-colours", split="test", n=40)
    kw = dict(target_label=target, by_class=True)
    here = decompose_data(model, ds, in_process=True, **kw)
    job = decompose_data(model, ds, job_dir=tmp_path / "job", shard_size=16, **kw)
    assert here.job_dir is None and job.job_dir == str(tmp_path / "job")
    assert job.job.computed == [0, 1, 2]
    assert job.count == here.count and job.mean_l0 == pytest.approx(here.mean_l0)
    assert job.mean_cosine == pytest.approx(here.mean_cosine, rel=1e-6)
    torch.testing.assert_close(job.mean_weights, here.mean_weights, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(job.concept_cosine, here.concept_cosine, rtol=1e-5, atol=1e-6)
    assert job.max_relative_gap is not None and here.max_relative_gap is not None
    assert job.max_relative_gap <= 1e-4 and here.max_relative_gap <= 1e-4
    assert job.class_counts == here.class_counts and job.class_names == here.class_names
    for lab in here.class_weights:
        torch.testing.assert_close(job.class_weights[lab], here.class_weights[lab],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(job.class_concept_cosine[lab],
                                   here.class_concept_cosine[lab], rtol=1e-5, atol=1e-6)
        assert job.class_l0[lab] == pytest.approx(here.class_l0[lab])
    again = decompose_data(model, ds, job_dir=tmp_path / "job", shard_size=16, **kw)
    assert again.job.computed == [] and torch.equal(again.mean_weights, job.mean_weights)


def test_reference_functions_use_a_job_for_names_and_stay_in_process_otherwise(model, tmp_path):
    import interp_splice as splice
    from splice_toy import ToyColours

    w_job, l0_job, cos_job = splice.decompose_dataset("toy-colours", model, limit=20,
                                                      job_dir=tmp_path / "job")
    assert read_manifest(tmp_path / "job")["num_samples"] == 20
    w_here, l0_here, cos_here = splice.decompose_dataset(ToyColours("test", n=20), model)
    torch.testing.assert_close(w_job, w_here, rtol=1e-4, atol=1e-6)
    assert l0_job == pytest.approx(l0_here) and cos_job == pytest.approx(cos_here, rel=1e-6)
    # a model built from tensors has no names for a worker: in process, no job folder
    hand = splice.SPLICE(model.image_mean, model.dictionary, clip=model.backbone,
                         l1_penalty=0.25, vocabulary=model.vocabulary)
    w_hand, _, _ = splice.decompose_dataset("toy-colours", hand, limit=20,
                                            job_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()
    torch.testing.assert_close(w_hand, w_here, rtol=1e-4, atol=1e-6)


def test_an_image_mean_over_a_named_dataset_is_a_reused_embedding_job(toy_registry, tmp_path,
                                                                      monkeypatch):
    import interpcore
    from interpcore import concepts
    from interpcore.engine import worker

    bb = interpcore.get_backbone("toy:clip")
    here = concepts.image_mean(bb, "toy-colours", split="test", limit=30, cache=False)
    job = tmp_path / "mean"
    mean = concepts.image_mean(bb, "toy-colours", split="test", limit=30, job_dir=job,
                               batch_size=8)
    m = read_manifest(job)
    assert m["status"] == "complete" and m["num_samples"] == 30 and m["shards_total"] == 1
    torch.testing.assert_close(mean, here, rtol=1e-5, atol=1e-6)

    def no_compute(*a, **k):
        raise AssertionError("a finished mean job was computed again")

    monkeypatch.setattr(worker.ShardWorker, "compute", no_compute)
    again = concepts.image_mean(bb, "toy-colours", split="test", limit=30, job_dir=job,
                                batch_size=8)
    assert torch.equal(again, mean)
