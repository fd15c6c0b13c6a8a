"""The interp prs / textspan commands, driven in-process on a tiny random CLIP ViT."""

import json
import subprocess
import sys

import numpy as np
import pytest

import interpcore
from interpcore.testing import tiny_open_clip_backbone

_BB = {}


class _Data(interpcore.Dataset):
    name = "tinyprs-data"
    classes = ["circle", "square"]
    group_names = ["circle/grass", "circle/water", "square/grass", "square/water"]

    def __init__(self, split="test", n=16):
        from PIL import Image

        rng = np.random.default_rng(0 if split == "test" else 1)
        self.split = split
        self.items = []
        for i in range(n):
            arr = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            mask = np.zeros((32, 32), np.int64)
            mask[8:20, 8:20] = 1
            self.items.append({"image": Image.fromarray(arr), "label": (i // 2) % 2, "group": i % 4,
                               "mask": mask, "attributes": {"colour": ["red", "blue"][i % 2]},
                               "index": i})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def __repr__(self):
        return f"<tinyprs-data {self.split}>"


class _Plugin:
    @staticmethod
    @interpcore.hookimpl
    def register_backbones(register):
        def load(model, **kw):
            if "b" not in _BB:
                _BB["b"] = tiny_open_clip_backbone(name="tinyprs:clip")
            return _BB["b"]

        register("tinyprs", load, list_models=lambda: ["clip"])

    @staticmethod
    @interpcore.hookimpl
    def register_datasets(register):
        register("tinyprs-data", lambda split="test", **kw: _Data(split))


@pytest.fixture
def cli(plugin_cli):
    invoke = plugin_cli(_Plugin, "prs-test-tiny", "tinyprs")
    base = ["--backbone", "tinyprs:clip"]

    def run(group, cmd, *args, data=True):
        extra = ["--dataset", "tinyprs-data", "--batch-size", "8"] if data else []
        return invoke(group, cmd, *base, *extra, *args)

    return run


def test_decompose_dataset_and_images(cli, tmp_path):
    r = cli("prs", "decompose", "--out", str(tmp_path / "d"), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["images"] == 16 and data["max_abs_error_of_sum"] < 1e-5
    assert (tmp_path / "d" / "job" / "arrays" / "heads" / "shard-00000.npy").is_file()
    assert json.loads((tmp_path / "d" / "run.json").read_text())["method"] == "prs"
    img = tmp_path / "x.png"
    _Data().items[0]["image"].save(img)
    r = cli("prs", "decompose", str(img), "--per-patch", "--out", str(tmp_path / "i"), data=False)
    assert r.exit_code == 0, r.output
    assert "max relative error" in r.output
    assert (tmp_path / "i" / "contributions.safetensors").is_file()


def test_ablate_writes_plot_and_report(cli, tmp_path):
    out = tmp_path / "a"
    r = cli("prs", "ablate", "--templates", "a photo of a {}.", "--out", str(out),
            "--report", str(out / "report.html"))
    assert r.exit_code == 0, r.output
    assert "attention layers 0-2 mean-ablated" in r.output
    assert (out / "ablation.png").is_file() and (out / "report.html").is_file()


def test_textspan_and_spurious_and_search(cli, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("grass\nwater\na circle\na square\nred\nblue\nsnow\n")
    r = cli("textspan", "run", "--pool", str(pool), "--layers", "2", "--texts-per-head", "2",
            "--rank", "8", "--out", str(tmp_path / "t"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t" / "textspan_heads.txt").read_text().count("Layer ") == 8
    r = cli("prs", "spurious", "--heads-matching", "grass|water", "--match-top", "2",
            "--pool", str(pool), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert "worst" in res["before"] and len(res["before"]["groups"]) == 4
    r = cli("prs", "spurious", "--heads", "2.1", "--probe", "--train-limit", "16")
    assert r.exit_code == 0, r.output
    assert "linear probe" in r.output
    r = cli("prs", "search", "--heads", "2.0,2.3", "-k", "3", "--out", str(tmp_path / "s"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "neighbours.png").is_file() and "colour" in r.output


def test_segment_and_heatmap(cli, tmp_path):
    r = cli("prs", "segment", "--out", str(tmp_path / "g"), "--figures", "1", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert 0 <= res["miou"] <= 1 and res["n_images"] == 16
    r = cli("prs", "heatmap", "--dataset", "tinyprs-data", "--index", "0", "--index", "3",
            "-t", "a circle", "-t", "grass", "--per-head", "--layers", "2", "--heads", "2.0,2.1",
            "--out", str(tmp_path / "h"), data=False)
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "h").glob("heatmap_*.png"))) == 2
    assert len(list((tmp_path / "h").glob("heads_*.png"))) == 4
    # the printout names each map's hottest patch, as found in the saved maps
    r = cli("prs", "heatmap", "--dataset", "tinyprs-data", "--index", "0", "-t", "a circle",
            "-t", "grass", "--out", str(tmp_path / "h2"), "--json", data=False)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    maps = np.asarray(res["maps"])  # (images, texts, rows, cols)
    assert len(res["peaks"]) == 2
    for j, p in enumerate(res["peaks"]):
        row, col = np.unravel_index(maps[0, j].argmax(), maps[0, j].shape)
        assert p["patch"] == [int(row), int(col)] and p["value"] == pytest.approx(maps[0, j].max(), abs=1e-4)
    r = cli("prs", "heatmap", "--dataset", "tinyprs-data", "--index", "0", "-t", "a circle",
            "-t", "grass", "--out", str(tmp_path / "h3"), data=False)
    p = res["peaks"][1]
    assert f"'grass' at ({p['patch'][0]}, {p['patch'][1]})" in r.output


def test_errors_are_one_line(cli, tmp_path):
    r = cli("prs", "spurious")
    assert r.exit_code == 1 and "--heads" in r.output and "Traceback" not in r.output
    r = cli("prs", "search", "--heads", "9.0")
    assert r.exit_code == 1 and "does not exist" in r.output
    r = cli("prs", "ablate", "--out", str(tmp_path / "r.html"), "--report", str(tmp_path / "r.txt"))
    assert r.exit_code == 1 and "give a path ending in .html" in r.output


def test_report_without_out_uses_a_temporary_run_folder(cli, tmp_path):
    # the same behaviour as every method command: --report alone builds the report from a
    # temporary run folder, which is removed afterwards
    rep = tmp_path / "rep" / "r.html"
    r = cli("prs", "ablate", "--templates", "a photo of a {}.", "--report", str(rep))
    assert r.exit_code == 0, r.output
    html = rep.read_text()
    assert "Mean-ablation study" in html and "data:image/png" in html  # the figure, inlined
    assert [p.name for p in rep.parent.iterdir()] == ["r.html"]


def test_cli_module_does_not_import_torch():
    code = ("import sys, interp_prs, interp_prs.cli; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
