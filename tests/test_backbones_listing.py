"""Backbone listing reads what the libraries offer without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _run_cli(args, env_extra=None):
    """Run `interp <args>` in a fresh interpreter and report whether torch got imported."""
    code = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from interpcore.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main({args!r})
            except SystemExit:
                pass
        heavy = sorted(m for m in ("torch", "open_clip", "timm", "transformers", "torchvision") if m in sys.modules)
        print(json.dumps({{"out": out.getvalue(), "heavy": heavy}}))
        """
    )
    import os

    env = dict(os.environ, INTERP_QUIET="1", **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_open_clip_listing_has_tags_and_no_torch():
    res = _run_cli(["backbones", "list", "open_clip:*ViT-B*"])
    assert res["heavy"] == [], f"listing imported {res['heavy']}"
    lines = {line.split("  [")[0]: line for line in res["out"].splitlines()}
    assert "open_clip:ViT-B-32" in lines
    assert "laion2b_s34b_b79k" in lines["open_clip:ViT-B-32"] and "openai" in lines["open_clip:ViT-B-32"]
    assert "open_clip:ViT-B-16" in lines
    assert not any(name.startswith("clip:") for name in lines)


def test_clip_timm_torchvision_listing_no_torch(tmp_path):
    res = _run_cli(["backbones", "list", "*"], {"INTERP_CACHE_DIR": str(tmp_path)})
    assert res["heavy"] == [], f"listing imported {res['heavy']}"
    names = [line.split("  [")[0] for line in res["out"].splitlines()]
    for expected in ("clip:ViT-B/32", "clip:ViT-B/16", "clip:RN50", "timm:resnet50",
                     "torchvision:resnet50", "hf:openai/clip-vit-base-patch32"):
        assert expected in names, expected
    line = next(x for x in res["out"].splitlines() if x.startswith("timm:resnet50  ["))
    assert "a1_in1k" in line
    # the timm table was cached for the next listing
    assert list((tmp_path / "listings").glob("timm-*.json"))


def test_listing_matches_the_libraries_own_tables():
    """The torch-free parsers agree with what open_clip and timm report once imported."""
    pytest.importorskip("torch")
    import open_clip
    import timm

    from interp_open_clip.listing import list_open_clip_models
    from interp_timm.listing import _package_dir, _parse_models

    ours = dict(list_open_clip_models())
    theirs: dict[str, list[str]] = {}
    for model, tag in open_clip.list_pretrained():
        theirs.setdefault(model, []).append(tag)
    assert {m: ours.get(m) for m in theirs} == theirs
    # open_clip's own config files (list_models() also holds configs other tests or plugins,
    # e.g. shapes:clip-vit, registered at run time in this process)
    from pathlib import Path

    shipped = {p.stem for p in (Path(open_clip.__file__).parent / "model_configs").glob("*.json")}
    assert shipped and shipped <= set(ours)

    parsed = _parse_models(_package_dir("timm") / "models")
    # timm.list_models() also holds architectures plugins register at run time with timm's
    # register_model (e.g. shapes:resnet's builder); those are defined outside timm's package
    from timm.models import model_entrypoint

    extra = set(timm.list_models()) - set(parsed)
    assert set(parsed) <= set(timm.list_models())
    assert not [m for m in extra if model_entrypoint(m).__module__.startswith("timm.")], extra
    with_tags = [m for m in timm.list_models(pretrained=True) if "." in m]
    covered = sum(m.split(".", 1)[1] in parsed.get(m.split(".", 1)[0], []) for m in with_tags)
    assert covered / len(with_tags) > 0.9
