"""``interp neurons ablate | segment | find`` through the job runner (issue 18): each
command's dataset work is a sharded job in its folder; a rerun computes no shard and prints
the same numbers, a lost shard record recomputes only that shard, and the numbers are the
in-process API's (``lens.ablate`` / ``lens.segment`` / ``lens.find``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

import interpcore  # noqa: E402
from interpcore.engine import load_array  # noqa: E402

pytestmark = pytest.mark.slow
LIMIT, SHARD = 40, 16  # three shards: 16, 16, 8 images


@pytest.fixture(scope="module")
def cli():
    from click.testing import CliRunner

    from interpcore import cli as icli

    icli._add_plugin_commands()
    return lambda *a: CliRunner().invoke(icli.cli, ["-q", *map(str, a)])


@pytest.fixture(scope="module")
def explained(cli, tmp_path_factory):
    """An explain result of layer 2 on 40 shapes images (in-process), and the lens."""
    from interp_neurons.lens import NeuronsResult

    out = tmp_path_factory.mktemp("explain") / "run"
    r = cli("neurons", "explain", "--layers", "2", "--limit", LIMIT, "-V", "shapes-attributes", "--out", out)
    assert r.exit_code == 0, r.output
    lens = interpcore.get_explainer("neurons", "shapes:clip-vit", layers=[2], vocabulary="shapes-attributes")
    return out / "result", NeuronsResult.load(out / "result"), lens


def _last_run(job_dir):
    return json.loads((job_dir / "manifest.json").read_text())["last_run"]


def _resumes(cli, job_dir, *args):
    """Run a command three times into ``job_dir``: fresh, again (no shard computed), and after
    losing shard 1's record (only shard 1 recomputed); the three outputs agree. Its JSON."""
    outputs = []
    for expect in ([0, 1, 2], [], [1]):
        if expect == [1]:
            (job_dir / "records" / "shard-00001.json").unlink()
        r = cli(*args, "--job-dir", job_dir, "--shard-size", SHARD, "--json")
        assert r.exit_code == 0, r.output
        assert _last_run(job_dir)["computed"] == expect
        outputs.append(json.loads(r.stdout))
    assert outputs[0] == outputs[1] == outputs[2]
    return outputs[0]


@pytest.mark.parametrize("how", ["second-order", "activation"])
def test_ablate_is_a_resumable_job_with_the_in_process_accuracies(cli, explained, tmp_path, how):
    source, res, lens = explained
    data = _resumes(cli, tmp_path / "job", "neurons", "ablate", "--from", source, "--neuron", "L2.N3",
                    "--neuron", "L2.N40", "--limit", LIMIT, "--how", how)
    rep, ablated = (load_array(tmp_path / "job", a) for a in ("representation", "ablated"))
    assert rep.shape == ablated.shape and rep.shape[0] == LIMIT
    assert np.abs(ablated - rep).max() > 1e-3 * np.abs(rep).max()  # the job did ablate
    want = lens.ablate(res, [(2, 3), (2, 40)], "shapes", limit=LIMIT, how=how.replace("-", "_"))
    assert (data["before"], data["after"], data["neurons"]) == (want.before, want.after, want.neurons)


def test_segment_is_a_resumable_job_with_the_in_process_scores(cli, explained, tmp_path):
    source, res, lens = explained
    data = _resumes(cli, tmp_path / "job", "neurons", "segment", "--from", source, "--limit", LIMIT, "-k", 10)
    want = lens.segment(res, "shapes", k=10, limit=LIMIT)
    assert (data["miou"], data["miou_random"], data["iou"], data["n_images"]) == \
        (want.miou, want.miou_random, want.iou, LIMIT)


def test_find_without_a_result_reuses_explains_job(cli, tmp_path):
    """find without --from computes the statistics as explain's job: pointed at the job
    folder of an 'explain --job-dir' of the same probe set it computes no shard and lists
    what find --from that explain's result lists."""
    common = ["--layers", "2", "--limit", LIMIT, "-V", "shapes-attributes", "--job-dir", tmp_path / "job",
              "--shard-size", SHARD]
    r = cli("neurons", "explain", *common, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert _last_run(tmp_path / "job")["computed"] == [0, 1, 2]
    r = cli("neurons", "find", "on grass", "-k", 5, *common, "--json")
    assert r.exit_code == 0, r.output
    assert _last_run(tmp_path / "job")["computed"] == []
    want = cli("neurons", "find", "on grass", "-k", 5, "--from", tmp_path / "run" / "result", "--json")
    assert json.loads(r.stdout) == json.loads(want.stdout) and len(json.loads(r.stdout)) == 5
