"""``interp cache list|clear``: kinds, entry descriptions, interrupted writes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from interpcore.cache import cache_dir, write_text


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    torch = pytest.importorskip("torch")
    from interpcore.cache import save_tensors

    save_tensors(cache_dir("concepts") / "a.safetensors", {"embeddings": torch.zeros(3, 4)},
                 {"kind": "concept_dictionary", "backbone": "fake:bb", "vocabulary": "words",
                  "count": 3})
    (cache_dir("concepts") / "broken.safetensors").write_bytes(b"\x01\x02")
    (cache_dir("concepts") / ".b.safetensors.x1.part").write_bytes(b"half")
    write_text(cache_dir("downloads", "vocab") / "laion.txt", "a\nb\n")
    return tmp_path / "cache"


def run(*args):
    from interpcore.cli import cli

    res = CliRunner().invoke(cli, ["cache", *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_list_groups_by_kind_and_describes_entries(cache):
    out = run("list")
    assert "concepts: 3 file(s)" in out and "downloads: 1 file(s)" in out
    assert "concept_dictionary fake:bb words 3" in out
    assert "broken.safetensors  (unreadable" in out
    assert "incomplete write" in out


def test_list_json_and_kind_filter(cache):
    data = json.loads(run("list", "--json", "--kind", "downloads"))
    assert [e["path"] for e in data["entries"]] == ["downloads/vocab/laion.txt"]
    assert data["entries"][0]["complete"] is True


def test_clear_by_kind_then_pattern_includes_interrupted_writes(cache):
    assert "removed 1 file(s)" in run("clear", "--kind", "downloads", "-y")
    assert not (cache / "downloads" / "vocab" / "laion.txt").exists()
    assert "removed 1 file(s)" in run("clear", "*.part", "-y")
    assert sorted(p.name for p in (cache / "concepts").iterdir()) == ["a.safetensors",
                                                                      "broken.safetensors"]
    assert "removed 2 file(s)" in run("clear", "-y")
    assert "nothing to remove" in run("clear", "-y")
