"""Bad inputs and faults, one table per category: each case states its exact outcome.

CLI cases give the arguments, the exit status and a pattern the one error line must match
(``interp: error: ...``); no case may print a traceback. API cases give a callable and the
error it must raise, or check the correct result. Add a row to grow the battery; the policy
the rows test is written down in docs/errors.md.

Nothing here touches the network: "unreachable" is a closed loopback port or a patched probe.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import interpcore
from interpcore.errors import InterpError, InterpWarning, OfflineError

ROOT = Path(__file__).resolve().parents[1]
RED = str(ROOT / "examples" / "red_circle.png")


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: the shapes concept dictionary is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(shared_cache, monkeypatch, tmp_path):
    """``cli(*args, env=None)`` -> (exit code, stdout, stderr), in-process."""
    from interpcore.cli import _add_plugin_commands
    from interpcore.cli import cli as group

    _add_plugin_commands()
    monkeypatch.setenv("INTERP_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    runner = CliRunner()

    def run(*args, env=None, input=None):
        res = runner.invoke(group, ["-q", *args], env=env, input=input, catch_exceptions=True)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception  # an uncaught exception is a failed case, not an exit code
        return res.exit_code, res.stdout, res.stderr

    return run


def sub_env(**extra) -> dict:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "backbones"), str(ROOT / "vocabularies"), str(ROOT / "plugins")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    env["INTERP_OFFLINE"] = "1"
    env.update(extra)
    return env


def interp_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from interpcore.cli import main; main()", *args]


def assert_one_line_error(rc, err, want_rc, pattern):
    import re

    assert rc == want_rc, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("interp: (run with --debug")]
    if want_rc == 1:
        assert len(lines) == 1, err
        assert lines[0].startswith("interp: error: "), err
    assert re.search(pattern, err), f"{pattern!r} not in {err!r}"


def png_with_header(width, height) -> bytes:
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# -- files the cases use (built in tmp_path by name) ---------------------------------------


def make_file(kind: str, folder: Path) -> str:
    p = folder / kind
    if kind == "bomb.png":
        p.write_bytes(png_with_header(100_000, 100_000))
    elif kind == "empty.png":
        p.write_bytes(b"")
    elif kind == "text.png":
        p.write_text("not an image\n")
    elif kind == "truncated.png":
        p.write_bytes(Path(RED).read_bytes()[:300])
    elif kind == "folder":
        p.mkdir()
    elif kind == "afile":
        p.write_text("x")
    elif kind == "weights.txt":
        p.write_text("hello\n")
    elif kind == "evil.pt":
        import pickle

        marker = folder / "PWNED"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        p.write_bytes(pickle.dumps(Evil()))
    elif kind == "random.safetensors":
        p.write_bytes(os.urandom(64))
    else:
        raise KeyError(kind)
    return str(p)


@dataclasses.dataclass
class Cli:
    """A CLI case: ``{name}`` in args is a file made by :func:`make_file`; ``{tmp}`` the
    test's folder. ``absent``: paths (under tmp) that must not exist afterwards."""

    args: tuple
    rc: int
    pattern: str
    files: tuple = ()
    absent: tuple = ()
    env: dict | None = None


CLI_CASES = {
    "names": {
        "misspelt shapes model": Cli(("splice", "decompose", RED, "-b", "shapes:clip-vt"), 1,
                                     r"unknown backbone 'shapes:clip-vt'\. Did you mean: shapes:clip-vit"),
        "misspelt open_clip model": Cli(("splice", "decompose", RED, "-b", "open_clip:ViT-B-23"), 1,
                                        r"unknown backbone 'open_clip:ViT-B-23'.*open_clip:ViT-B-32"),
        "misspelt clip name": Cli(("splice", "decompose", RED, "-b", "clip:ViT-B/23"), 1,
                                  r"unknown backbone 'clip:ViT-B/23'.*clip:ViT-B/32"),
        "misspelt timm model": Cli(("falcon", "find-groups", "-b", "timm:resnet5O"), 1,
                                   r"unknown backbone 'timm:resnet5O'.*timm:resnet50"),
        "unknown family": Cli(("splice", "decompose", RED, "-b", "nolib:x"), 1, r"unknown backbone 'nolib'"),
        "no colon": Cli(("splice", "decompose", RED, "-b", "shapes"), 1, r"unknown backbone 'shapes'.*library:model"),
        "misspelt vocabulary": Cli(("splice", "decompose", RED, "-v", "shapez"), 1,
                                   r"unknown vocabulary 'shapez'\. Did you mean: shapes\?"),
        "misspelt dataset": Cli(("splice", "dataset", "-d", "shapez"), 1, r"unknown dataset 'shapez'"),
        "misspelt job method": Cli(("job", "run", "--method", "splcie", "--out", "{tmp}/job"), 1,
                                   r"unknown decomposer 'splcie'\. Did you mean: splice", absent=("job",)),
        "misspelt job backbone family": Cli(("job", "run", "--backbone", "shapez:x", "--out", "{tmp}/job"), 1,
                                            r"unknown backbone 'shapez'", absent=("job",)),
    },
    "options": {
        "dataset option it lacks (job)": Cli(("job", "run", "-D", "colour=red", "--out", "{tmp}/job"), 1,
                                             r"dataset 'shapes' has no option 'colour'\. Its options: n, seed",
                                             absent=("job",)),
        "dataset option it lacks (show)": Cli(("datasets", "show", "shapes-spurious", "-O", "colour=red"), 1,
                                              r"dataset 'shapes-spurious' has no option 'colour'"),
        "close option name": Cli(("datasets", "show", "shapes", "-O", "sead=3"), 1,
                                 r"has no option 'sead'\. Did you mean: seed\?"),
        "option without value": Cli(("job", "run", "-D", "n", "--out", "{tmp}/job"), 2, r"expected KEY=VALUE"),
        "negative l1 penalty": Cli(("splice", "decompose", RED, "--l1-penalty", "-1"), 1, r"--l1-penalty must be >= 0"),
        "zero batch size": Cli(("splice", "decompose", RED, "--batch-size", "0"), 1, r"--batch-size must be at least 1"),
        "install with nothing": Cli(("install",), 1, r"name a package to install, or a folder with -e"),
        "install -e missing folder": Cli(("install", "-e", "{tmp}/nope"), 2, r"does not exist"),
        "cache clear without -y and no terminal": Cli(("cache", "clear"), 1, r"add -y to confirm"),
        "uninstall without -y and no terminal": Cli(("uninstall", "some-plugin"), 1,
                                                    r"none could be read \(no terminal\?\); add -y to confirm"),
    },
    "images": {
        "decompression bomb": Cli(("splice", "decompose", "{bomb.png}"), 1,
                                  r"bomb\.png is refused as a possible decompression bomb.*INTERP_MAX_IMAGE_PIXELS",
                                  files=("bomb.png",)),
        "empty file": Cli(("splice", "decompose", "{empty.png}"), 1, r"empty\.png is not an image that can be read",
                          files=("empty.png",)),
        "text file": Cli(("splice", "decompose", "{text.png}"), 1, r"text\.png is not an image", files=("text.png",)),
        "truncated file": Cli(("splice", "decompose", "{truncated.png}"), 1, r"truncated",
                              files=("truncated.png",)),
        "a folder": Cli(("splice", "decompose", "{folder}"), 1, r"folder is a folder; give image files",
                       files=("folder",)),
        "missing file": Cli(("splice", "decompose", "{tmp}/missing.png"), 1, r"image file not found"),
        "PRS bomb": Cli(("prs", "decompose", "{bomb.png}"), 1, r"decompression bomb", files=("bomb.png",)),
    },
    "vocabularies": {
        "size 0": Cli(("splice", "decompose", RED, "--vocabulary-size", "0"), 1,
                      r"--vocabulary-size must be at least 1 \(omit it, or give -1"),
        "size above the vocabulary": Cli(("splice", "decompose", RED, "--vocabulary-size", "100000"), 1,
                                         r"vocabulary 'shapes' has 160 entries; size=100000 asks for more"),
        "size -5": Cli(("splice", "decompose", RED, "--vocabulary-size", "-5"), 1, r"must be at least 1"),
        "empty vocabulary file": Cli(("splice", "decompose", RED, "-v", "{tmp}/blank.txt"), 1, r"empty"),
    },
    "weights files": {
        "text file as weights": Cli(("splice", "decompose", RED, "--pretrained", "{weights.txt}"), 1,
                                    r"weights\.txt is not a readable checkpoint", files=("weights.txt",)),
        "malicious pickle as weights": Cli(("splice", "decompose", RED, "--pretrained", "{evil.pt}"), 1,
                                           r"pickle holding Python objects.*it was not run",
                                           files=("evil.pt",), absent=("PWNED",)),
        "random bytes as safetensors": Cli(("splice", "decompose", RED, "--pretrained", "{random.safetensors}"), 1,
                                           r"random\.safetensors is not a readable checkpoint",
                                           files=("random.safetensors",)),
        "missing weights file": Cli(("splice", "decompose", RED, "--pretrained", "{tmp}/nope.pt"), 1, r"not found"),
    },
    "caches": {
        "cache folder is a file": Cli(("splice", "decompose", RED), 1,
                                      r"INTERP_CACHE_DIR cannot be used: .*afile is a file, not a folder",
                                      files=("afile",), env={"INTERP_CACHE_DIR": "{afile}"}),
        "cache folder under a file": Cli(("splice", "decompose", RED), 1, r"is a file, not a folder",
                                         files=("afile",), env={"INTERP_CACHE_DIR": "{afile}/sub"}),
    },
    "outputs": {
        "--out under a file": Cli(("splice", "decompose", RED, "--out", "{afile}/run"), 1,
                                  r"--out .*afile/run: .*afile is a file, not a folder", files=("afile",)),
        "--out is a file": Cli(("splice", "decompose", RED, "--out", "{afile}"), 1,
                               r"--out .*afile exists and is not a folder", files=("afile",)),
        "--report is a folder": Cli(("splice", "decompose", RED, "--report", "{folder}"), 1,
                                    r"--report .*folder is a folder; give a file", files=("folder",)),
    },
}


def _cli_params():
    for category, cases in CLI_CASES.items():
        for name, case in cases.items():
            yield pytest.param(case, id=f"{category}: {name}")


@pytest.mark.parametrize("case", list(_cli_params()))
def test_cli_case(case: Cli, cli, tmp_path):
    (tmp_path / "blank.txt").write_text("\n \n")
    files = {k: make_file(k, tmp_path) for k in case.files}

    def fill(text):
        for key, value in {"tmp": str(tmp_path), **files}.items():
            text = text.replace("{" + key + "}", value)
        return text

    args = [fill(a) for a in case.args]
    env = {k: fill(v) for k, v in (case.env or {}).items()} or None
    rc, _out, err = cli(*args, env=env, input="")
    assert_one_line_error(rc, err, case.rc, case.pattern)
    for name in case.absent:
        assert not (tmp_path / name).exists(), f"{name} was left behind"


# -- the shared CLI options (issue 14): -q after the subcommand, --out checked first --------


def test_quiet_after_the_subcommand(cli):
    rc, out, err = cli("splice", "decompose", RED, "-q")
    assert rc == 0, err
    assert "Concept Decomposition" in out


def test_out_is_checked_before_the_computing(cli, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh-cache"
    monkeypatch.setenv("INTERP_CACHE_DIR", str(fresh))
    (tmp_path / "afile").write_text("x")
    rc, _out, err = cli("splice", "decompose", RED, "--out", str(tmp_path / "afile" / "run"),
                        env={"INTERP_CACHE_DIR": str(fresh)})
    assert rc == 1, err
    assert not any(fresh.rglob("*.safetensors")), "the concept dictionary was built before --out was checked"


# -- images through the API: converted correctly ------------------------------------------


def _load(obj):
    from interpcore.torch_backbone import load_image

    return np.asarray(load_image(obj))


def _saved(tmp_path, name, image, **kw):
    p = tmp_path / name
    image.save(p, **kw)
    return str(p)


def img_16bit_png(tmp_path):
    a = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    got = _load(_saved(tmp_path, "g16.png", Image.fromarray(a)))
    assert got.shape == (32, 32, 3)
    np.testing.assert_allclose(got[..., 0], a / 257.0, atol=0.51)  # scaled, not clipped to white


def img_16bit_tiff(tmp_path):
    a = np.full((8, 8), 1000, np.uint16)  # a dark 16-bit scan stays dark
    assert (_load(_saved(tmp_path, "g16.tif", Image.fromarray(a))) == 4).all()


def img_32bit_int(tmp_path):
    a = np.full((4, 4), 65535, np.int32)
    assert (_load(Image.fromarray(a, "I")) == 255).all()


def img_float_mode(tmp_path):
    a = np.full((4, 4), 0.5, np.float32)
    assert (_load(Image.fromarray(a, "F")) == 128).all()


def img_palette_transparent(tmp_path):
    p = Image.new("P", (8, 8))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    got = _load(_saved(tmp_path, "pal.png", p, transparency=0))
    assert (got == 255).all()  # the transparent red is composited on white


def img_palette_opaque(tmp_path):
    p = Image.new("P", (8, 8), 1)
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    assert (_load(_saved(tmp_path, "pal2.png", p))[0, 0] == [0, 0, 255]).all()


def img_cmyk(tmp_path):
    got = _load(_saved(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=100))
    assert got[0, 0, 0] > 240 and got[0, 0, 1] < 15 and got[0, 0, 2] < 15


def img_rgba(tmp_path):
    assert (_load(_saved(tmp_path, "a.png", Image.new("RGBA", (8, 8), (255, 0, 0, 0)))) == 255).all()


def img_la(tmp_path):
    got = _load(_saved(tmp_path, "la.png", Image.new("LA", (8, 8), (0, 128))))
    assert (got == 127).all()  # black at half opacity on white


def img_greyscale(tmp_path):
    assert (_load(_saved(tmp_path, "l.png", Image.new("L", (8, 8), 77))) == 77).all()


def img_exif_rotation(tmp_path):
    im = Image.new("RGB", (20, 10), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert _load(_saved(tmp_path, "ex.jpg", im, exif=exif)).shape[:2] == (20, 10)


def img_animated(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "an.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.warns(InterpWarning, match="has 2 frames.*using the first"):
        got = _load(str(path))
    assert got[0, 0, 0] > 200 and got[0, 0, 2] < 50


def img_array_float(tmp_path):
    assert (_load(np.full((4, 4, 3), 0.5, np.float32)) == 128).all()


def img_array_uint16(tmp_path):
    assert (_load(np.full((4, 4), 65535, np.uint16)) == 255).all()


def img_array_bool(tmp_path):
    assert (_load(np.ones((4, 4), bool)) == 255).all()


def img_array_nan(tmp_path):
    with pytest.raises(InterpError, match="NaN or infinite"):
        _load(np.full((4, 4, 3), np.nan))


def img_array_negative(tmp_path):
    with pytest.raises(InterpError, match="negative values"):
        _load(np.full((4, 4, 3), -1.0))


def img_array_bad_shape(tmp_path):
    with pytest.raises(InterpError, match=r"shape \(4, 4, 2\)"):
        _load(np.zeros((4, 4, 2)))


def img_bomb_api(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_with_header(100_000, 100_000))
    with pytest.raises(InterpError, match="decompression bomb"):
        _load(str(p))


def img_bomb_limit_env(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_MAX_IMAGE_PIXELS", "100")  # a genuine image over the limit
    with pytest.raises(InterpError, match="decompression bomb"):
        _load(RED)
    monkeypatch.setenv("INTERP_MAX_IMAGE_PIXELS", "5000")
    assert _load(RED).shape == (32, 32, 3)


def img_wrong_type(tmp_path):
    with pytest.raises(InterpError, match="expected a PIL image, a path"):
        _load(42)


IMAGE_CASES = [img_16bit_png, img_16bit_tiff, img_32bit_int, img_float_mode, img_palette_transparent,
               img_palette_opaque, img_cmyk, img_rgba, img_la, img_greyscale, img_exif_rotation,
               img_animated, img_array_float, img_array_uint16, img_array_bool, img_array_nan,
               img_array_negative, img_array_bad_shape, img_bomb_api, img_bomb_limit_env, img_wrong_type]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda f: "images: " + f.__name__[4:].replace("_", " "))
def test_image_case(case, tmp_path, monkeypatch):
    import inspect

    if "monkeypatch" in inspect.signature(case).parameters:
        case(tmp_path, monkeypatch)
    else:
        case(tmp_path)


# -- tensors and vocabularies through the API ---------------------------------------------


@pytest.fixture(scope="module")
def shapes_clip(shared_cache):
    os.environ.setdefault("INTERP_CACHE_DIR", str(shared_cache))
    return interpcore.get_backbone("shapes:clip-vit")


@pytest.fixture(scope="module")
def splice(shapes_clip, shared_cache):
    old = os.environ.get("INTERP_CACHE_DIR")
    os.environ["INTERP_CACHE_DIR"] = str(shared_cache)
    try:
        return interpcore.get_decomposer("splice", shapes_clip, vocabulary="shapes")
    finally:
        if old is None:
            os.environ.pop("INTERP_CACHE_DIR")
        else:
            os.environ["INTERP_CACHE_DIR"] = old


TENSOR_CASES = {
    "splice: pixels of the wrong size": ("splice", lambda t: t.rand(1, 3, 50, 50),
                                         r"pixels of shape \(3, 50, 50\) do not fit backbone 'shapes:clip-vit', which takes \(3, 32, 32\)"),
    "splice: one channel": ("splice", lambda t: t.rand(1, 1, 32, 32), r"pixels of shape \(1, 32, 32\) do not fit"),
    "splice: integer pixels": ("splice", lambda t: t.zeros(1, 3, 32, 32, dtype=t.uint8), r"must be a float tensor"),
    "splice: 5-d tensor": ("splice", lambda t: t.rand(1, 1, 3, 32, 32), r"\(n, C, H, W\), got shape \(1, 1, 3, 32, 32\)"),
    "splice: NaN embeddings": ("splice", lambda t: t.full((2, 128), float("nan")), r"NaN or infinite"),
    "splice: embeddings of another model": ("splice", lambda t: t.rand(2, 7), r"7 dimensions.*128"),
    "prs: NaN pixels": ("prs", lambda t: t.full((1, 3, 32, 32), float("nan")), r"pixels contain NaN or infinite"),
    "prs: infinite pixels": ("prs", lambda t: t.full((1, 3, 32, 32), float("inf")), r"NaN or infinite"),
    "prs: wrong size": ("prs", lambda t: t.rand(1, 3, 64, 64), r"do not fit|resize images"),
}


@pytest.mark.parametrize("case", list(TENSOR_CASES), ids=lambda k: f"tensors: {k}")
def test_tensor_case(case, shapes_clip, splice):
    import torch

    method, make, pattern = TENSOR_CASES[case]
    dec = splice if method == "splice" else interpcore.get_decomposer("prs", shapes_clip)
    with pytest.raises(InterpError, match=pattern):
        dec.decompose(make(torch))


def test_tensors_right_size_still_work(splice):
    import torch

    res = splice.decompose(torch.rand(2, 3, 32, 32))
    assert len(res.weights) == 2


VOCAB_CASES = {
    "registry size -1 is everything": (lambda: len(interpcore.get_vocabulary("shapes", size=-1)), 160),
    "registry size None is everything": (lambda: len(interpcore.get_vocabulary("shapes")), 160),
    "registry size 5": (lambda: len(interpcore.get_vocabulary("shapes", size=5)), 5),
    "registry size 0": (lambda: interpcore.get_vocabulary("shapes", size=0), r"at least 1 \(or -1 / None"),
    "registry size above": (lambda: interpcore.get_vocabulary("shapes", size=161), r"has 160 entries; size=161"),
    "registry size True": (lambda: interpcore.get_vocabulary("shapes", size=True), r"whole number"),
    "registry size 2.5": (lambda: interpcore.get_vocabulary("shapes", size=2.5), r"whole number"),
    "list size above": (lambda: interpcore.get_vocabulary(["a", "b"], size=3), r"has 2 entries"),
    "caption pool grows to the size": (lambda: len(interpcore.get_vocabulary("shapes-captions", size=5001)), 5001),
    "reference get_vocabulary -1": (lambda: len(__import__("interp_splice").get_vocabulary("shapes", -1)), 160),
}


@pytest.mark.parametrize("case", list(VOCAB_CASES), ids=lambda k: f"vocabularies: {k}")
def test_vocabulary_case(case):
    call, want = VOCAB_CASES[case]
    if isinstance(want, str):
        with pytest.raises(InterpError, match=want):
            call()
    else:
        assert call() == want


@pytest.mark.parametrize("size, want", [(-1, 160), (None, 160), (7, 7), (0, "positive integer"),
                                        (-3, "positive integer"), (500, "has 160 entries")],
                         ids=lambda v: f"vocabularies: decomposer size {v}")
def test_decomposer_vocabulary_size(size, want, shapes_clip, shared_cache, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(shared_cache))
    make = lambda: interpcore.get_decomposer("splice", shapes_clip, vocabulary="shapes",  # noqa: E731
                                             vocabulary_size=size)
    if isinstance(want, str):
        with pytest.raises(InterpError, match=want):
            make()
    else:
        assert len(make().vocabulary) == want


def test_cli_vocabulary_size_minus_one_is_the_default(cli):
    rc, out_all, err = cli("splice", "decompose", RED, "--vocabulary-size", "-1")
    assert rc == 0, err
    assert out_all == cli("splice", "decompose", RED)[1]


# -- weights and the network ---------------------------------------------------------------


def test_probe_of_a_closed_port_is_quick_and_false():
    import socket

    from interpcore import download

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t = time.monotonic()
    assert download.reachable(f"http://127.0.0.1:{port}/x") is False
    assert time.monotonic() - t < 5


def test_unreachable_hub_fails_without_calling_the_library(monkeypatch, tmp_path):
    import huggingface_hub

    from interpcore import download, weights

    for var in ("INTERP_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "reachable", lambda url: False)
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(*a, **kw):
        calls.append(kw.get("local_files_only", False))
        return real(*a, **kw)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(OfflineError) as info:
        weights.hub_file("org/repo", ["w.safetensors"], what="test:model", cache_dir=tmp_path)
    msg = str(info.value)
    assert "huggingface.co cannot be reached" in msg
    assert "--pretrained /path/to/w.safetensors" in msg and "`hf download org/repo`" in msg
    assert "huggingface-cli" not in msg
    assert calls == [True], "only the local cache may be asked when the hub is unreachable"


def test_unreachable_url_is_an_offline_error_without_calling_the_library(monkeypatch, tmp_path):
    from interpcore import download, weights

    for var in ("INTERP_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "reachable", lambda url: False)
    calls = []
    with pytest.raises(OfflineError, match=r"example\.org cannot be reached.*--pretrained /path/to/w\.pt"):
        weights.library_download(lambda: calls.append(1), what="test:model",
                                 url="https://example.org/w.pt", url_dir=tmp_path)
    assert calls == [] and list(tmp_path.iterdir()) == []
    (tmp_path / "w.pt").write_bytes(b"x")  # already in the library's folder: the library is asked
    assert weights.library_download(lambda: "found", what="test:model",
                                    url="https://example.org/w.pt", url_dir=tmp_path) == "found"


def test_open_clip_without_network_is_one_message_in_seconds(tmp_path):
    """A real model's missing weights, no network, nothing set by the user: the hub endpoint is
    a closed loopback port (HF_ENDPOINT), so the probe fails at once."""
    env = sub_env(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
                  INTERP_CACHE_DIR=str(tmp_path / "cache"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    for var in ("INTERP_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(var, None)
    code = ("import interpcore\ninterpcore.get_backbone('open_clip:ViT-B-32')")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "Retrying" not in p.stderr and "Retry" not in p.stderr, p.stderr
    assert "OfflineError" in p.stderr and "127.0.0.1 cannot be reached" in p.stderr
    assert "--pretrained" in p.stderr and "hf download" in p.stderr


def test_misspelt_backbone_is_refused_before_torch_is_imported():
    code = ("import sys, interpcore\n"
            "for name in ['open_clip:ViT-B-23', 'clip:ViT-B/23', 'timm:resnet5O', 'shapes:clip-vt']:\n"
            "    try:\n        interpcore.get_backbone(name)\n    except interpcore.InterpError as e:\n"
            "        assert 'Did you mean' in str(e), e\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')")
    p = subprocess.run([sys.executable, "-c", code], env=sub_env(), capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "ok", p.stderr


# -- caches --------------------------------------------------------------------------------


def test_corrupt_cache_entries_are_rebuilt(cli, splice, shared_cache, tmp_path, monkeypatch):
    import shutil

    rc, first, err = cli("splice", "decompose", RED)  # the module's cache, already built
    assert rc == 0, err
    cache = tmp_path / "c"
    shutil.copytree(shared_cache, cache)
    monkeypatch.setenv("INTERP_CACHE_DIR", str(cache))
    entries = list(cache.rglob("*.safetensors"))
    assert entries
    for p in entries:
        p.write_bytes(b"garbage")
    (cache / "concepts" / ".left.safetensors.abc.part").write_bytes(b"half")
    rc, again, err = cli("splice", "decompose", RED, env={"INTERP_CACHE_DIR": str(cache)})
    assert rc == 0, err
    assert again == first


# -- outputs: permissions and atomic writes ------------------------------------------------


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=lambda v: f"outputs: umask {v:o}" if isinstance(v, int) else str(v))
def test_written_files_follow_the_umask(mask, want, cli, tmp_path):
    old = os.umask(mask)
    try:
        rc, _out, err = cli("splice", "decompose", RED, "--out", str(tmp_path / "run"))
    finally:
        os.umask(old)
    assert rc == 0, err
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.endswith("_weights.txt") for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


def test_atomic_writer_follows_the_umask(tmp_path):
    from interpcore.cache import write_text

    old = os.umask(0o027)
    try:
        write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o640


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    from interpcore.cache import write_text

    texts = [str(i) * 10_000 for i in range(8)]
    threads = [threading.Thread(target=write_text, args=(tmp_path / "same.txt", t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / "same.txt").read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["same.txt"]  # no temporary left


# -- pipes, terminals, signals -------------------------------------------------------------


def test_closed_pipe_exits_quietly():
    p = subprocess.Popen(interp_cmd("backbones", "list"), env=sub_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()  # `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert err == ""


def test_warnings_print_as_one_line(tmp_path, splice, shared_cache):
    Image.fromarray((np.random.default_rng(0).random((427, 640, 3)) * 255).astype("uint8")).save(tmp_path / "photo.jpg")
    p = subprocess.run(interp_cmd("-q", "splice", "decompose", str(tmp_path / "photo.jpg")),
                       env=sub_env(INTERP_CACHE_DIR=str(shared_cache)), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and warn[0].startswith("interp: warning: "), p.stderr
    assert "(640 x 427) is far from the images shapes:clip-vit was trained on" in warn[0]


def test_in_world_image_earns_no_warning(shapes_clip):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", InterpWarning)
        shapes_clip.encode_image([RED])


def test_photo_through_the_shapes_resnet_warns(shared_cache):
    bb = interpcore.get_backbone("shapes:resnet")
    photo = Image.new("RGB", (640, 427), (90, 120, 60))
    with pytest.warns(InterpWarning, match="far from the images shapes:resnet was trained on"):
        bb.encode_image([photo])


def _wait_for(pred, timeout=240):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_killed_job_is_reported_interrupted_and_resumes(tmp_path, cli):
    out = tmp_path / "job"
    env = sub_env(INTERP_CACHE_DIR=str(tmp_path / "cache"))
    args = ("-q", "job", "run", "-D", "n=160", "--shard-size", "4", "--out", str(out))
    p = subprocess.Popen(interp_cmd(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def one_shard_done():
        try:
            return json.loads((out / "manifest.json").read_text()).get("shards_done", 0) >= 1
        except (OSError, ValueError):
            return False

    try:
        assert _wait_for(one_shard_done), "the job never finished a shard"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest["status"] == "complete":
        pytest.skip("the job finished before it could be killed")
    rc, text, err = cli("job", "status", str(out))
    assert rc == 0, err
    assert "status interrupted (its process" in text and "rerun the same command to resume" in text
    rc, js, _ = cli("job", "status", str(out), "--json")
    assert json.loads(js)["status"] == "interrupted"
    done = subprocess.run(interp_cmd(*args), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert "status complete" in cli("job", "status", str(out))[1]


def test_live_job_status_is_running(tmp_path):
    from interpcore.engine import _runner, live_status

    assert live_status({"status": "running", "runner": _runner()})[0] == "running"
    assert live_status({"status": "running", "runner": {**_runner(), "host": "elsewhere"}})[1].startswith(
        "as last recorded by host elsewhere")
    assert live_status({"status": "running", "runner": {**_runner(), "pid_start": "1"}})[0] == "interrupted"


def test_sigint_during_a_run_folder_write_leaves_no_half_folder(tmp_path):
    out = tmp_path / "run"
    env = sub_env(INTERP_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.Popen(interp_cmd("-q", "splice", "dataset", "-d", "shapes", "--limit", "4000", "--out", str(out)),
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(12)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode != 0 or (out / "run.json").exists()
    assert "Traceback" not in err, err
    if out.exists():  # whatever is there is whole: no temporaries, run.json only when finished
        assert not [q for q in out.rglob("*.part")]


def test_install_editable_folder_needs_no_package_name(cli, monkeypatch):
    """`interp install -e examples/interp_example_plugin`, as the READMEs write it (pip is not run)."""
    import interpcore.cli as icli

    seen = []
    monkeypatch.setattr(icli.subprocess, "call", lambda args: seen.append(args) or 0)
    rc, _out, err = cli("install", "-e", str(ROOT / "examples" / "interp_example_plugin"))
    assert rc == 0, err
    assert seen and seen[0][1:4] == ["-m", "pip", "install"]
    assert seen[0][-2:] == ["-e", str(ROOT / "examples" / "interp_example_plugin")]
