"""``interp splice decompose|classes|dataset`` on the toy CLIP, in-process (click's runner),
plus the torch-free start-up of ``interp splice --help``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from splice_toy import colour_image

TOY = ["-b", "toy:clip", "-v", "toy-words", "--mean-dataset", "toy-colours"]


@pytest.fixture
def interp(toy_registry):
    """Run ``interp ARGS`` in-process against a registry that has the toy plugin."""
    from interpcore.cli import _add_plugin_commands, cli

    _add_plugin_commands()
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, c in enumerate(["red", "blue"]):
        p = tmp_path / f"{c}.png"
        colour_image(c, seed=i).save(p)
        paths.append(str(p))
    return paths


def test_decompose_prints_the_reference_report(interp, images):
    res = interp("splice", "decompose", *images, *TOY)
    assert res.exit_code == 0, res.output
    blocks = res.output.strip().split("Concept Decomposition of ")[1:]
    assert len(blocks) == 2
    for path, block, colour in zip(images, blocks, ["red", "blue"]):
        lines = block.splitlines()
        assert lines[0] == f"{path}:"
        assert lines[1].split("\t")[1] == colour  # the largest weight is the image's colour
        assert lines[-2].startswith("Decomposition L0 Norm: \t")
        assert lines[-1].startswith("CLIP, SpLiCE Cosine Sim: \t")
        assert len(lines) - 3 == int(lines[-2].split("\t")[1])  # one line per nonzero concept


def test_decompose_json_and_out_folder(interp, images, tmp_path):
    out = tmp_path / "run"
    res = interp("splice", "decompose", images[0], "--json", "--out", str(out), *TOY)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    first = data["images"][0]
    assert first["concepts"][0]["concept"] == "red" and first["l0"] == len(first["concepts"])
    assert 0 < first["cosine"] <= 1
    from interpcore.report import load_run

    manifest = load_run(out)
    assert manifest["method"] == "splice"
    assert manifest["results"]["images"][0]["concepts"][0]["concept"] == "red"
    assert (out / "red_concepts.png").is_file()
    # the report shows the input image next to its concepts
    assert manifest["sections"][0]["figures"][0] == "red_input.png"
    from PIL import Image

    with Image.open(out / "red_input.png") as im:
        assert max(im.size) == 256
    text = (out / "red_weights.txt").read_text()
    assert text.startswith(f"Concept Decomposition of {images[0]}:")


def test_decompose_report_without_out(interp, images, tmp_path):
    html = tmp_path / "r.html"
    res = interp("splice", "decompose", images[1], "--report", str(html), *TOY)
    assert res.exit_code == 0, res.output
    page = html.read_text()
    assert "data:image/png;base64" in page and "blue" in page


def test_classes_writes_one_bar_plot_per_class(interp, tmp_path):
    out = tmp_path / "classes"
    res = interp("splice", "classes", "-d", "toy-colours", "-n", "20", "--plot-topk", "3",
                 "--out", str(out), *TOY)
    assert res.exit_code == 0, res.output
    pngs = sorted(p.name for p in out.glob("class_*.png"))
    assert pngs == sorted(f"class_{c}.png" for c in
                          ["red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan",
                           "white", "black"])
    assert "Concept Decomposition of class red:\n\tred\t" in res.output


def test_classes_one_label_by_name_or_index_and_json(interp):
    by_name = interp("splice", "classes", "-d", "toy-colours", "--class-label", "green", "--json", *TOY)
    by_index = interp("splice", "classes", "-d", "toy-colours", "--class-label", "1", "--json", *TOY)
    a, b = json.loads(by_name.output), json.loads(by_index.output)
    assert [c["name"] for c in a["classes"]] == ["green"] == [c["name"] for c in b["classes"]]
    assert a["classes"][0]["concepts"][0]["concept"] == "green"
    assert a["count"] == a["classes"][0]["count"] == 6  # 60 images, 10 colours


def test_dataset_averages_and_comparison_plot(interp, tmp_path):
    out = tmp_path / "ds"
    res = interp("splice", "dataset", "-d", "toy-colours", "-n", "20", "--compare", "toy-colours",
                 "--compare-split", "train", "--out", str(out), "--json", *TOY)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["dataset"]["count"] == 20 and data["compare"]["count"] == 20
    assert 0 < data["dataset"]["mean_cosine"] <= 1 and data["dataset"]["mean_l0"] >= 1
    assert (out / "compare.png").is_file()
    from interpcore.report import load_run

    titles = [s["title"] for s in load_run(out)["sections"]]
    assert len(titles) == 4  # each dataset's bars, the comparison, then each dataset's job
    assert titles[2:] == ["Job outputs (toy-colours (test))", "Job outputs (toy-colours (train))"]


@pytest.mark.parametrize("args, message", [
    (["splice", "decompose", "missing.png"], "image file not found"),
    (["splice", "decompose", "IMG", "--l1-penalty", "-0.1"], "--l1-penalty must be >= 0"),
    (["splice", "classes", "-d", "toy-colours", "--class-label", "magenta"], "not a class"),
    (["splice", "classes", "-d", "toy-colours", "--class-label", "42"], "out of range"),
    (["splice", "decompose", "IMG", "-v", "no-such-vocab"], "unknown vocabulary"),
    (["splice", "dataset", "-d", "no-such-data"], "unknown dataset"),
])
def test_bad_input_is_one_clear_line(interp, images, args, message):
    args = [images[0] if a == "IMG" else a for a in args]
    opts = list(TOY)
    if "-v" in args:  # the test names its own vocabulary
        opts = [a for a in opts if a not in ("-v", "toy-words")]
    res = interp(*args, *opts)
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output


def test_not_an_image_is_a_clear_error(interp, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    res = interp("splice", "decompose", str(bad), *TOY)
    assert res.exit_code == 1 and "is not an image" in res.output


def test_help_does_not_import_torch():
    code = ("import sys\nfrom interpcore.cli import main\n"
            "try:\n    main(['splice', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "decompose" in out.stdout and "classes" in out.stdout
    assert out.stdout.strip().endswith("TORCH False"), out.stdout[-300:] + out.stderr[-500:]


def test_dataset_through_a_resumable_engine_job_matches_the_local_run(interp, tmp_path):
    local = interp("splice", "dataset", "-d", "toy-colours", "-n", "20", "--json", *TOY)
    job = tmp_path / "job"
    args = ["splice", "dataset", "-d", "toy-colours", "-n", "20", "--json", "--job-dir", str(job),
            "--shard-size", "8", *TOY]
    first = interp(*args)
    assert first.exit_code == 0, first.output
    again = interp(*args)  # resumes: every shard is already there
    a, b, c = (json.loads(r.output) for r in (local, first, again))
    assert a["count"] == b["count"] == c["count"] == 20
    assert b["mean_l0"] == pytest.approx(a["mean_l0"])
    assert b["mean_cosine"] == pytest.approx(a["mean_cosine"], rel=1e-5)
    wa = {x["concept"]: x["weight"] for x in a["concepts"]}
    wb = {x["concept"]: x["weight"] for x in b["concepts"]}
    assert wa.keys() == wb.keys() and all(wb[k] == pytest.approx(wa[k], rel=1e-4) for k in wa)
    assert c == b | {"seconds": c["seconds"]}


@pytest.mark.parametrize("seed_name, ours", [("CIFAR10", "cifar10"), ("CIFAR100", "cifar100"),
                                             ("ImageNetVal", "imagenet-val"),
                                             ("Waterbirds", "waterbirds")])
def test_reference_dataset_names_map_to_registered_datasets(monkeypatch, seed_name, ours):
    import interpcore

    from interp_splice.cli import _dataset

    asked = {}
    monkeypatch.setattr(interpcore, "list_datasets", lambda: [ours, "shapes"])
    monkeypatch.setattr(interpcore, "get_dataset",
                        lambda name, split="test", **o: asked.update(name=name, split=split, **o))
    key, _ = _dataset(seed_name, "test", "/data/x")
    assert key == ours and asked == {"name": ours, "split": "test", "root": "/data/x"}
