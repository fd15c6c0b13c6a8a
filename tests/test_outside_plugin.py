"""A third-party plugin written from docs/plugins.md alone, installed the way a user does.

``tests/plugin_packages/outside`` (distribution ``interp-outside``) was written by someone
who read only README.md, docs/ and the example plugin's README, never the source. This file
pip-installs it (no network, no build isolation) into a temporary ``--target`` folder seen
by subprocesses through PYTHONPATH, and checks from the command line and the Python API, in
those subprocesses, that interpcore lists it, that its backbones, vocabulary and explainer
pass the contract checks of ``interpcore.testing``, and that every built-in method runs on
its backbones using the defaults the family advertises (docs/plugins.md, "Defaults are
data").

The Python API checks run in ONE subprocess with the shapes world disabled
(``INTERP_DISABLE_PLUGINS=shapes,shapes_models``): a built-in method that names a shapes
default instead of asking the backbone then fails at once, naming what it looked for,
rather than quietly running on the wrong data. The command-line checks run with every
built-in enabled, as a user has them, and read what was used from the JSON / run.json.
Everything runs offline (``INTERP_OFFLINE=1``) in a temporary cache and working folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tests" / "plugin_packages" / "outside"
IMAGES = [ROOT / "examples" / "red_circle.png", ROOT / "examples" / "blue_square_on_water.png"]
TIMEOUT = 300


def _interp() -> list[str]:
    script = Path(sys.executable).with_name("interp")
    if script.exists():
        return [str(script)]
    found = shutil.which("interp")
    if found is None:
        pytest.skip("the interp command is not installed next to this Python")
    return [found]


class World:
    """The installed plugin: environment and helpers for subprocesses."""

    def __init__(self, base: Path, target: Path):
        self.base = base
        self.work = base / "work"              # the subprocesses' working folder
        self.work.mkdir()
        paths = [str(target)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths),
                        INTERP_CACHE_DIR=str(base / "cache"), INTERP_OFFLINE="1",
                        HF_HUB_OFFLINE="1", INTERP_STRICT_PLUGINS="1", INTERP_QUIET="1",
                        PIP_NO_INDEX="1")
        for key in ("INTERP_NO_PLUGINS", "INTERP_PLUGINS", "INTERP_DISABLE_PLUGINS"):
            self.env.pop(key, None)

    def run(self, args, *, env=None, check=True):
        proc = subprocess.run(args, cwd=self.work, env=dict(self.env, **(env or {})),
                              capture_output=True, text=True, timeout=TIMEOUT)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                                 f"{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
        return proc

    def interp(self, *args, **kwargs):
        return self.run(_interp() + [str(a) for a in args], **kwargs)

    def python(self, code: str, **kwargs):
        return self.run([sys.executable, "-c", code], **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("outside")
    src = base / "src"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = base / "site"
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--no-cache-dir", "--quiet", "--target", str(target), str(src)],
        capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stderr[-3000:]}"
    assert list(target.glob("interp_outside-0.1.0.dist-info")), "no dist-info installed"
    return World(base, target)


# --------------------------------------------------------------------------- discovery

def test_interp_plugins_lists_it_ok(world):
    out = world.interp("plugins").stdout
    line = next((l for l in out.splitlines() if l.startswith("outside ")), None)
    assert line is not None, out
    assert " ok " in line and "interp-outside 0.1.0" in line, line
    hooks = out.split(line, 1)[1].splitlines()[1]
    for hook in ("register_backbones", "register_vocabularies", "register_datasets",
                 "register_explainers", "register_commands"):
        assert hook in hooks, hooks
    assert "clash" not in out.lower(), out


def test_listing(world):
    out = world.interp("backbones", "list", "outside:*").stdout
    assert "outside:clip" in out and "outside:cnn" in out, out
    out = world.interp("vocabularies", "list", "outside*").stdout
    assert "outside-words" in out and "outside-captions" in out, out
    out = world.interp("datasets", "list", "outside*").stdout
    assert "outside-shapes" in out, out
    out = world.interp("methods", "list").stdout
    assert re.search(r"^outside-saliency\s+explainer", out, re.M), out
    out = world.interp("--help").stdout
    assert "outside-hello" in out and "outside-saliency" in out, out


def test_vocabulary_and_dataset_from_the_cli(world):
    # keep="last": size=3 keeps the three most frequent words, the file's last three
    out = world.interp("vocabularies", "show", "outside-words", "--size", "3").stdout
    assert re.findall(r"^\s*\d+\s+(\w+)$", out, re.M) == ["red", "green", "blue"], out
    data = json.loads(world.interp("datasets", "show", "outside-shapes", "--json").stdout)
    assert data["size"] == 24 and data["first_classes"] == ["circle", "square", "triangle"], data
    assert data["samples"][0]["mask_values"] == [0, 1], data["samples"][0]


def test_nothing_heavy_at_import_time(world):
    """docs/plugins.md's first rule: listing, the vocabularies, the dataset and the command
    module import no torch."""
    code = ("import sys, interpcore; interpcore.list_backbones('outside:*'); "
            "interpcore.get_vocabulary('outside-words', size=3); "
            "interpcore.get_dataset('outside-shapes')[0]; import interp_outside.cli; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    assert world.python(code).stdout.strip() == "[]"


def test_role_defaults_do_not_take_over_from_the_builtins(world):
    """The plugin advertises default_models for both roles; the docs say the built-ins load
    first and default_backbone(role) returns the first advertised, so shapes keeps them, and
    the plugin's take over only when the shapes world is disabled."""
    code = ("import interpcore; print(interpcore.default_backbone('vision-language'), "
            "interpcore.default_backbone('vision'))")
    assert world.python(code).stdout.split() == ["shapes:clip-vit", "shapes:resnet"]
    off = {"INTERP_DISABLE_PLUGINS": "shapes,shapes_models"}
    assert world.python(code, env=off).stdout.split() == ["outside:clip", "outside:cnn"]


# --------------------------------------------------------------------------- Python API

API_SCRIPT = r'''
import json, sys, time, traceback
import torch
import interpcore
from interpcore.testing import check_backbone, check_method, check_vocabulary

IMAGES = sys.argv[2:]
results = {}

def check(name):
    def wrap(fn):
        start = time.perf_counter()
        try:
            results[name] = {"ok": True, "data": fn()}
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                             "traceback": traceback.format_exc()[-2500:]}
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        return fn
    return wrap

clip = interpcore.get_backbone("outside:clip", device="cpu")
cnn = interpcore.get_backbone("outside:cnn", device="cpu")

@check("contract_clip")
def _():
    return str(check_backbone(clip))

@check("contract_cnn")
def _():
    return str(check_backbone(cnn))

@check("contract_vocabularies")
def _():
    for name in ("outside-words", "outside-captions"):
        check_vocabulary(interpcore.get_vocabulary(name),
                         sized=lambda k, n=name: interpcore.get_vocabulary(n, size=k))
    try:
        interpcore.get_vocabulary("outside-words", size=1000)
    except interpcore.InterpError:
        return "ok"
    raise AssertionError("size larger than the vocabulary did not raise InterpError")

@check("contract_saliency")
def _():
    check_method(interpcore.get_explainer("outside-saliency", clip), IMAGES)
    check_method(interpcore.get_explainer("outside-saliency", cnn, target=3), IMAGES[:1])
    return "ok"

@check("dataset")
def _():
    ds = interpcore.get_dataset("outside-shapes")
    s = ds[5]
    assert s["image"].mode == "RGB" and s["image"].size == (32, 32)
    assert ds.classes[s["label"]] == s["attributes"]["shape"]
    assert s["mask"].shape == (32, 32) and set(s["mask"].ravel().tolist()) == {0, 1}
    tasks = ds.zeroshot_tasks()
    assert {"label", "color"} <= set(tasks), tasks
    assert tasks["color"].labels([ds[i] for i in range(3)]).tolist() == [0, 0, 0]
    return {"len": len(ds), "train": len(interpcore.get_dataset("outside-shapes", split="train"))}

@check("defaults_advertised")
def _():
    assert clip.defaults["vocabulary"] == "outside-words", clip.defaults
    assert cnn.defaults["captioner"] == "outside:clip", cnn.defaults
    return {"vl": interpcore.default_backbone("vision-language"),
            "vision": interpcore.default_backbone("vision")}

# -- SpLiCE
def _splice_summary(r):
    d = r.to_dict()
    return {"text": str(r), "vocabulary": d.get("vocabulary"), "l0": [i["l0"] for i in d["images"]],
            "cosine": [i["cosine"] for i in d["images"]]}

@check("splice_told_everything")
def _():
    dec = interpcore.get_decomposer("splice", clip, vocabulary="outside-words",
                                    mean_dataset="outside-shapes")
    return _splice_summary(dec.decompose(IMAGES))

@check("splice_default_vocabulary")
def _():        # the image mean is named: only the vocabulary comes from the defaults
    dec = interpcore.get_decomposer("splice", clip, mean_dataset="outside-shapes")
    return _splice_summary(dec.decompose(IMAGES))

@check("splice_default_image_mean")
def _():        # the vocabulary is named: only the image mean comes from the defaults
    dec = interpcore.get_decomposer("splice", clip, vocabulary="outside-words")
    return _splice_summary(dec.decompose(IMAGES))

@check("splice_all_defaults")
def _():
    return _splice_summary(interpcore.get_decomposer("splice", clip).decompose(IMAGES))

# -- PRS
@check("prs_images")
def _():
    r = interpcore.get_decomposer("prs", clip).decompose(IMAGES, per_patch=True)
    total = r.embed + r.attn.sum(1) + r.mlps.sum(1) + r.ln_bias
    own = ((total - r.embedding).norm(dim=1) / r.embedding.norm(dim=1)).max().item()
    vs_encoder = ((r.embedding - clip.encode_image(IMAGES)).norm(dim=1)
                  / r.embedding.norm(dim=1)).max().item()
    heads_vs_attn = ((r.heads.sum((2, 3)) + r.attn_bias - r.attn).norm(dim=-1).max()
                     / r.attn.norm(dim=-1).max()).item()
    return {"max_relative_error": float(r.max_relative_error()), "own_sum": own,
            "vs_encode_image": vs_encoder, "heads_vs_attn": heads_vs_attn,
            "heads_shape": list(r.heads.shape), "text": str(r)}

# -- TextSpan
def _textspan_summary(r):
    d = r.to_dict()
    return {"text": str(r), "pool": d.get("pool"), "n_images": d.get("n_images"),
            "layers": d.get("layers"), "task": d.get("task"), "n_heads": len(d.get("heads") or [])}

@check("textspan_told_everything")
def _():
    ts = interpcore.get_explainer("textspan", clip, pool="outside-words", texts_per_head=3)
    return _textspan_summary(ts.explain(interpcore.get_dataset("outside-shapes", limit=12)))

@check("textspan_all_defaults")
def _():        # no dataset, no pool: outside-shapes (24 test images) and outside-words
    ts = interpcore.get_explainer("textspan", clip, texts_per_head=3)
    return _textspan_summary(ts.explain(limit=30))

# -- FALCON (outside:cnn is the target, outside:clip the captioner)
SMALL = dict(sigma=1.0, min_images=2, max_images=4, score_threshold=0.0, low_count=3)

def _falcon_summary(r):
    d = r.to_dict()
    groups = d.get("groups") or []
    return {"text": str(r), "captioner": d.get("captioner"), "pool": d.get("pool"),
            "dataset": d.get("dataset"), "n_images": d.get("n_images"), "n_groups": len(groups),
            "explained": sum(1 for g in groups if g.get("words"))}

@check("falcon_told_everything")
def _():
    f = interpcore.get_explainer("falcon", cnn, captioner="outside:clip", pool="outside-captions", **SMALL)
    ds = interpcore.get_dataset("outside-shapes")
    return _falcon_summary(f.explain(f.find_groups(ds)))

@check("falcon_all_defaults")
def _():        # no captioner, pool or dataset named
    f = interpcore.get_explainer("falcon", cnn, **SMALL)
    return _falcon_summary(f.explain())

# -- the neuron methods: the second-order lens on outside:clip, CLIP-Dissect on outside:cnn
@check("neurons_all_defaults")
def _():        # no dataset, no vocabulary: outside-shapes and outside-words
    lens = interpcore.get_explainer("neurons", clip)
    check_method(lens, IMAGES)
    r = lens.explain(limit=30)
    ab = lens.ablate(r, r.top(4), how="activation")
    return {"vocabulary": r.vocabulary, "n_images": r.n_images, "layers": r.layers,
            "split_error": r.mlp_split_error, "labelled": sum(1 for p in r.neurons() if r.label(*p)),
            "tasks": sorted(ab.before), "found": len(lens.find(r, "red", k=3))}

@check("dissect_all_defaults")
def _():        # no CLIP, vocabulary or dataset named
    ex = interpcore.get_explainer("dissect", cnn, layer="layer2")
    check_method(ex, IMAGES)
    r = ex.explain()
    return {"clip": r.clip, "vocabulary": r.vocabulary, "n_images": r.n_images, "labels": len(r.labels),
            "known": all(label in r.concepts for label in r.labels)}

# -- the plugin's own explainer
@check("saliency")
def _():
    ex = interpcore.get_explainer("outside-saliency", "outside:clip", target=5)
    for p in ex.backbone.model.parameters():
        p.grad = None
    r = ex.explain(IMAGES)
    assert all(p.grad is None for p in ex.backbone.model.parameters())
    maps = r.maps
    # the same gradient by hand, through the documented public API
    x = clip.to_pixels(IMAGES).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(clip.forward(x)[:, 5].sum(), x)
    ref = grad.abs().amax(dim=1)
    assert maps.shape == (2, 32, 32) and torch.allclose(maps, ref, atol=1e-7), (maps.shape,)
    assert json.loads(r.to_json())["target"] == 5
    return {"text": str(r), "max": float(maps.max())}

@check("saliency_no_backbone_named")
def _():
    ex = interpcore.get_explainer("outside-saliency")
    return {"backbone": ex.backbone.name}

@check("errors")
def _():        # a user's mistakes are one-sentence InterpErrors
    messages = []
    for call in (lambda: interpcore.get_backbone("outside:clipp"),
                 lambda: interpcore.get_explainer("outside-saliency", clip, target=99).explain(IMAGES),
                 lambda: interpcore.get_explainer("outside-saliency", clip, bogus=1),
                 lambda: interpcore.get_dataset("outside-shapes", split="nope")):
        try:
            call()
        except interpcore.InterpError as exc:
            messages.append(str(exc))
        else:
            raise AssertionError("no InterpError")
    assert "outside:clip" in messages[0], messages[0]
    assert all("\n" not in m for m in messages), messages
    return messages

json.dump(results, open(sys.argv[1], "w"), indent=1)
'''


@pytest.fixture(scope="module")
def api(world) -> dict:
    script = world.base / "api_checks.py"
    script.write_text(API_SCRIPT)
    out = world.base / "api_results.json"
    world.run([sys.executable, str(script), str(out)] + [str(p) for p in IMAGES],
              env={"INTERP_DISABLE_PLUGINS": "shapes,shapes_models"})
    return json.loads(out.read_text())


def _ok(api, name) -> object:
    r = api[name]
    assert r["ok"], f"{name}: {r['error']}\n{r['traceback']}"
    return r["data"]


@pytest.mark.parametrize("name", ["contract_clip", "contract_cnn", "contract_vocabularies",
                                  "contract_saliency"])
def test_contract_checks(api, name):
    _ok(api, name)


def test_dataset_api(api):
    assert _ok(api, "dataset") == {"len": 24, "train": 36}


def test_defaults_without_the_shapes_world(api):
    assert _ok(api, "defaults_advertised") == {"vl": "outside:clip", "vision": "outside:cnn"}


def _check_splice(data):
    assert data["vocabulary"] == "outside-words", data
    assert all(l0 >= 1 for l0 in data["l0"]), data
    assert all(0.0 < c <= 1.0 + 1e-6 for c in data["cosine"]), data
    assert "Decomposition L0 Norm" in data["text"]


@pytest.mark.parametrize("name", ["splice_told_everything", "splice_default_vocabulary",
                                  "splice_default_image_mean", "splice_all_defaults"])
def test_splice_api(api, name):
    _check_splice(_ok(api, name))


def test_prs_contributions_sum_to_the_embedding(api):
    data = _ok(api, "prs_images")
    assert data["max_relative_error"] < 1e-5, data      # the figure docs/prs.md describes
    assert data["own_sum"] < 1e-5 and data["vs_encode_image"] < 1e-5, data
    assert data["heads_vs_attn"] < 1e-5, data           # heads (per patch) + bias == attention
    assert data["heads_shape"] == [2, 2, 4, 17, 24], data


def test_textspan_told_everything(api):
    data = _ok(api, "textspan_told_everything")
    assert data["pool"] == "outside-words" and data["n_images"] == 12, data
    assert data["n_heads"] == 8, data                   # 2 layers x 4 heads


def test_textspan_defaults(api):
    data = _ok(api, "textspan_all_defaults")
    assert data["pool"] == "outside-words", data        # the family's text_pool
    assert data["n_images"] == 24, data                 # outside-shapes' 24 test images


def _check_falcon(data):
    assert data["captioner"] == "outside:clip", data
    assert data["pool"] == "outside-captions", data
    assert data["dataset"] == "outside-shapes" and data["n_images"] == 24, data
    assert data["n_groups"] >= 1 and data["explained"] >= 1, data


@pytest.mark.parametrize("name", ["falcon_told_everything", "falcon_all_defaults"])
def test_falcon_api(api, name):
    _check_falcon(_ok(api, name))


def test_neurons_api(api):
    data = _ok(api, "neurons_all_defaults")
    assert data["vocabulary"] == "outside-words" and data["n_images"] == 24, data
    assert data["layers"] == [0] and data["split_error"] < 1e-5, data  # 2 layers: the last has no later attention
    assert data["labelled"] >= 1 and data["found"] == 3 and "label" in data["tasks"], data


def test_dissect_api(api):
    data = _ok(api, "dissect_all_defaults")
    assert data["clip"] == "outside:clip" and data["vocabulary"] == "outside-words", data
    assert data["n_images"] == 24 and data["labels"] == 48 and data["known"], data


def test_errors_are_one_sentence(api):
    assert len(_ok(api, "errors")) == 4


def test_saliency_api(api):
    assert _ok(api, "saliency")["max"] > 0
    assert _ok(api, "saliency_no_backbone_named") == {"backbone": "outside:clip"}


# --------------------------------------------------------------------------- CLI runs

def test_splice_decompose_cli(world):
    out = world.base / "cli_splice"
    proc = world.interp("splice", "decompose", IMAGES[0], "-b", "outside:clip", "--json",
                        "--out", out, check=False)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-2:]
    data = json.loads(proc.stdout)
    assert data["backbone"] == "outside:clip" and data["vocabulary"] == "outside-words", data
    assert data["images"][0]["l0"] >= 1, data
    assert (out / "run.json").exists()


def test_prs_decompose_cli(world):
    """A dataset store on the family's default dataset; the printed check is the sum of
    contributions against the (unit) embedding."""
    out = world.base / "cli_prs"
    proc = world.interp("prs", "decompose", "-b", "outside:clip", "-n", "6", "--out", out)
    match = re.search(r"sum of contributions vs [\w ]*embedding: max \w+ error ([0-9.eE+-]+)",
                      proc.stdout)
    assert match and float(match.group(1)) < 1e-5, proc.stdout
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["dataset"] == "outside-shapes", settings


def test_textspan_run_cli(world):
    out = world.base / "cli_textspan"
    proc = world.interp("textspan", "run", "-b", "outside:clip", "-n", "12", "--texts-per-head", "3",
                        "--json", "--out", out)
    data = json.loads(proc.stdout)
    assert data["backbone"] == "outside:clip" and data["n_images"] == 12, data
    assert data["pool"] == "outside-words", data["pool"]
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["dataset"] == "outside-shapes", settings


def test_falcon_explain_cli(world):
    proc = world.interp("falcon", "explain", "-b", "outside:cnn", "-c", "outside:clip",
                        "--limit", "24", "--sigma", "1", "--min-images", "2", "--max-images", "4",
                        "--score-threshold", "0", "--json")
    data = json.loads(proc.stdout)
    assert data["backbone"] == "outside:cnn" and data["captioner"] == "outside:clip", data
    assert data["dataset"] == "outside-shapes", data["dataset"]
    assert data["pool"] == "outside-captions", data["pool"]
    assert any(g.get("words") for g in data["groups"]), data["groups"]


def test_saliency_cli(world):
    out = world.base / "cli_saliency"
    report = world.base / "saliency.html"
    proc = world.interp("outside-saliency", *IMAGES, "-b", "outside:cnn", "--target", "2",
                        "--out", out, "--report", report)
    assert proc.stdout.startswith("Gradient saliency of embedding[2] on outside:cnn:"), proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 3, proc.stdout
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["method"] == "outside-saliency"
    assert manifest["sections"][0]["figures"], manifest["sections"]
    assert report.read_text().lstrip().lower().startswith("<!doctype html")


def test_hello_command(world):
    proc = world.interp("outside-hello", IMAGES[0], "-b", "outside:clip", "--json")
    data = json.loads(proc.stdout)
    assert data["backbone"] == "outside:clip" and data["embed_dim"] == 24, data
    assert data["vocabulary"] == "outside-words" and data["closest"][0], data
    # the shared options check the output folder before the work (docs/plugins.md, Commands)
    blocker = world.base / "a_file"
    blocker.write_text("x")
    bad = world.interp("outside-hello", IMAGES[0], "-b", "outside:clip", "--out", blocker / "sub",
                       check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) <= 2, bad.stderr


def test_neurons_cli(world):
    out = world.base / "cli_neurons"
    data = json.loads(world.interp("neurons", "explain", "-b", "outside:clip", "--limit", "12", "--json",
                                   "--out", out).stdout)
    assert data["backbone"] == "outside:clip" and data["vocabulary"] == "outside-words", data["vocabulary"]
    assert data["n_images"] == 12 and (out / "result" / "result.json").exists()
    data = json.loads(world.interp("neurons", "ablate", "--from", out / "result", "-b", "outside:clip",
                                   "--neuron", "L0.N3", "--how", "activation", "--limit", "12", "--json").stdout)
    assert data["neurons"] == [[0, 3]] and data["how"] == "activation" and data["before"], data


def test_dissect_cli(world):
    data = json.loads(world.interp("dissect", "-b", "outside:cnn", "--layer", "layer2", "--limit", "24",
                                   "--json").stdout)
    assert data["backbone"] == "outside:cnn" and data["clip"] == "outside:clip", data["clip"]
    assert data["vocabulary"] == "outside-words" and len(data["labels"]) == 48, data["vocabulary"]
