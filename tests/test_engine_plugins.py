"""The SpLiCE and PRS dataset paths through the engine give what their single-process path
gives, and resume. Local engine here (the Ray engine runs the same
ShardWorker code; see test_engine_ray.py). Skipped when the plugins are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import interpcore
from engine_toy import TINY_CLIP


def _names(kind):
    return interpcore.get_registry().names(kind)


needs = pytest.mark.skipif(
    not {"splice", "prs"} <= set(_names("decomposer")) or "shapes" not in _names("dataset")
    or "open_clip" not in _names("backbone"),
    reason="needs the splice, prs, shapes and open_clip plugins")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open_clip CLIP registered by config, its checkpoint, and an image mean."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from interp_open_clip import register_model_config

    root = tmp_path_factory.mktemp("tinyclip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP)
    ckpt = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    register_model_config("engine-plug-tiny", TINY_CLIP)
    mean = root / "mean.npy"
    np.save(mean, np.linspace(-0.1, 0.1, 24, dtype=np.float32))
    return {"backbone": "open_clip:engine-plug-tiny", "pretrained": str(ckpt), "mean": str(mean),
            "model_config": TINY_CLIP}


@needs
def test_splice_dataset_and_classes_through_the_engine_match_decompose_data(tiny_clip, tmp_path):
    from interp_splice.model import SpliceDecomposer

    ds = interpcore.get_dataset("shapes", split="test")
    bb = interpcore.get_backbone(tiny_clip["backbone"], pretrained=tiny_clip["pretrained"],
                                 device="cpu")
    dec = SpliceDecomposer(bb, vocabulary="shapes", l1_penalty=0.25, image_mean=tiny_clip["mean"],
                           batch_size=16)
    opts = dict(limit=40, batch_size=16, name="shapes")
    job = dict(opts, job_dir=tmp_path / "job", shard_size=16)
    ref = dec.decompose_dataset(ds, in_process=True, **opts)
    got = dec.decompose_dataset(ds, **job)
    assert ref.job_dir is None and got.job_dir == str(tmp_path / "job")
    assert got.count == ref.count == 40 and got.concepts == list(ref.concepts)
    np.testing.assert_allclose(got.mean_weights.numpy(), ref.mean_weights.numpy(), rtol=1e-4, atol=1e-6)
    assert got.mean_l0 == pytest.approx(ref.mean_l0)
    assert got.mean_cosine == pytest.approx(ref.mean_cosine, rel=1e-5)

    ref_c = dec.decompose_classes(ds, in_process=True, **opts)
    got_c = dec.decompose_classes(ds, **job)  # resumes
    assert got_c.class_counts == ref_c.class_counts and got_c.class_names == ref_c.class_names
    for lab in ref_c.class_weights:
        np.testing.assert_allclose(got_c.class_weights[lab].numpy(), ref_c.class_weights[lab].numpy(),
                                   rtol=1e-4, atol=1e-6)
        assert got_c.class_l0[lab] == pytest.approx(ref_c.class_l0[lab])
    manifest = interpcore.engine.read_manifest(tmp_path / "job")
    assert manifest["last_run"]["computed"] == []  # the classes run reused every shard


@needs
def test_prs_dataset_through_the_engine_matches_the_prs_store(tiny_clip, tmp_path):
    from interp_prs.cli import _store
    from interp_prs.decompose import PRSDecomposer, decompose_dataset

    kw = dict(backbone=tiny_clip["backbone"], pretrained=tiny_clip["pretrained"], device="cpu",
              dataset="shapes", split="test", root=None, limit=40, batch_size=16, out=None,
              engine="local", address=None, workers=None, shard_size=16,
              job_dir=str(tmp_path / "job"), overwrite=False)
    got = _store(kw, layers=1)  # the commands' job, built from the names by the worker
    bb = interpcore.get_backbone(kw["backbone"], pretrained=kw["pretrained"], device="cpu")
    ds = interpcore.get_dataset("shapes", split="test")
    store = decompose_dataset(PRSDecomposer(bb), ds, tmp_path / "store", batch_size=16, limit=40,
                              layers=1)
    assert len(got) == len(store) == 40 and got.head_layers == store.head_layers == [1]
    for name in ("embedding", "embed", "attn", "attn_cls", "mlps", "ln_bias", "heads", "norm"):
        np.testing.assert_allclose(got.array(name, mmap=False), store.array(name, mmap=False),
                                   rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(got.labels, store.labels)
    assert got.samples == store.samples and got.samples[0].get("attributes")
    assert Path(got.path) == tmp_path / "job"


@needs
def test_prs_decompose_command_with_job_dir_matches_the_local_command(tiny_clip, tmp_path):
    import json

    from click.testing import CliRunner

    from interpcore import cli as cli_mod

    cli_mod._add_plugin_commands()
    base = ["prs", "decompose", "-b", tiny_clip["backbone"], "--pretrained", tiny_clip["pretrained"],
            "--device", "cpu", "-d", "shapes", "-n", "32", "--batch-size", "16", "--json"]
    runner = CliRunner()
    local = runner.invoke(cli_mod.cli, base + ["--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    job = runner.invoke(cli_mod.cli, base + ["--shard-size", "16", "--job-dir", str(tmp_path / "job")])
    assert job.exit_code == 0, job.output
    a, b = json.loads(local.stdout), json.loads(job.stdout)
    assert a["images"] == b["images"] == 32 and b["max_abs_error_of_sum"] < 1e-4
    np.testing.assert_allclose(b["mean_norm"]["attn"], a["mean_norm"]["attn"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["mean_norm"]["mlps"], a["mean_norm"]["mlps"], rtol=1e-4, atol=1e-5)
    again = runner.invoke(cli_mod.cli, base + ["--shard-size", "16", "--job-dir", str(tmp_path / "job")])
    assert again.exit_code == 0, again.output
    assert interpcore.engine.read_manifest(tmp_path / "job")["last_run"]["computed"] == []
    bad = runner.invoke(cli_mod.cli, ["prs", "decompose", "x.png", "--engine", "ray"])
    assert bad.exit_code != 0 and "leave out IMAGES" in bad.output
