"""``interp cache list|clear``: kinds, entry descriptions, interrupted writes."""

from __future__ import annotations

import json
import sys

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


def _line(out, key):
    lines = [ln for ln in out.splitlines() if f" {key} " in f" {ln} "]
    assert len(lines) == 1, out
    return lines[0]


def test_list_is_one_line_per_entry_with_kind_key_size_age(cache):
    out = run("list")
    assert out.splitlines()[1].split() == ["KIND", "KEY", "SIZE", "AGE", "ABOUT"]
    line = _line(out, "a.safetensors")
    assert line.split()[0] == "concepts"
    assert "concept_dictionary fake:bb words 3" in line
    assert "(unreadable" in _line(out, "broken.safetensors")
    assert "incomplete write" in _line(out, ".b.safetensors.x1.part")
    assert _line(out, "vocab/laion.txt").split()[:4] == ["downloads", "vocab/laion.txt", "4", "B"]
    assert out.splitlines()[-1].startswith("4 entries")


def test_a_job_folder_is_one_entry(cache):
    job = cache / "jobs" / "0123abcd"
    for i in range(5):
        write_text(job / "arrays" / "emb" / f"shard-{i:05d}.npy", "x" * 10)
    write_text(job / "manifest.json", json.dumps({"status": "complete"}))
    rows = [e for e in json.loads(run("list", "--json"))["entries"] if e["kind"] == "jobs"]
    assert len(rows) == 1
    row = rows[0]
    assert row["key"] == "0123abcd" and row["files"] == 6 and row["about"] == "job complete"
    assert row["bytes"] == 50 + len(json.dumps({"status": "complete"}))
    assert "6 files, job complete" in _line(run("list", "--kind", "jobs"), "0123abcd")
    assert "removed 1 entry" in run("clear", "0123*", "-y")
    assert not job.exists()


def test_list_json_gives_the_same_rows_and_kind_filter(cache):
    data = json.loads(run("list", "--json", "--kind", "downloads"))
    assert [(e["kind"], e["key"], e["bytes"], e["files"]) for e in data["entries"]] == [
        ("downloads", "vocab/laion.txt", 4, 1)]
    assert data["entries"][0]["complete"] is True and data["entries"][0]["age_s"] >= 0
    every = json.loads(run("list", "--json"))["entries"]
    part = [e for e in every if e["key"].endswith(".part")]
    assert [e["complete"] for e in part] == [False]
    assert len(run("list").splitlines()) == 1 + 1 + len(every) + 1  # folder, header, rows, total


def test_clear_by_kind_then_pattern_includes_interrupted_writes(cache):
    assert "removed 1 entry" in run("clear", "--kind", "downloads", "-y")
    assert not (cache / "downloads" / "vocab" / "laion.txt").exists()
    assert "removed 1 entry" in run("clear", "*.part", "-y")
    assert sorted(p.name for p in (cache / "concepts").iterdir()) == ["a.safetensors",
                                                                      "broken.safetensors"]
    assert "removed 2 entries" in run("clear", "-y")
    assert "nothing to remove" in run("clear", "-y")


def test_python_clear_removes_whole_entries_by_kind_and_pattern(cache):
    from interpcore import cache as c

    job = cache / "jobs" / "feedbeef"
    for i in range(3):
        write_text(job / "arrays" / "emb" / f"shard-{i:05d}.npy", "x")
    write_text(job / "manifest.json", "{}")
    entries = c.list_entries("jobs")
    assert [(e.key, e.files, e.complete) for e in entries] == [("feedbeef", 4, True)]
    # a pattern on a shard's name matches no entry: shards are never removed one by one
    assert c.clear("shard-00001.npy") == []
    assert (job / "arrays" / "emb" / "shard-00001.npy").is_file()
    removed = c.clear("feed*", kind="jobs")
    assert [e.path for e in removed] == [job] and not job.exists()
    # list_entries leaves interrupted writes out unless asked; clear removes them too
    assert [e.key for e in c.list_entries("concepts")] == ["a.safetensors", "broken.safetensors"]
    assert [e.key for e in c.list_entries("concepts", incomplete=True) if not e.complete] == [
        ".b.safetensors.x1.part"]
    assert {e.key for e in c.clear(kind="concepts")} == {"a.safetensors", "broken.safetensors",
                                                        ".b.safetensors.x1.part"}
    assert [e.kind for e in c.list_entries(incomplete=True)] == ["downloads"]


def test_default_cache_folder_is_the_platform_user_cache(tmp_path, monkeypatch):
    import platformdirs

    from interpcore.cache import cache_dir

    monkeypatch.delenv("INTERP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # read by platformdirs on Linux
    want = platformdirs.user_cache_dir("interpcore", appauthor=False)
    assert cache_dir("concepts") == type(cache_dir())(want) / "concepts"
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xdg" / "interpcore"
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "mine"))  # the override wins
    assert cache_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()


def test_a_download_killed_midway_is_an_incomplete_entry(cache):
    """pooch streams a download into ``tmpXXXXXXXX`` next to the target (a name it chooses);
    left behind by a killed process it is listed as an interrupted write, never as an entry."""
    from interpcore import cache as c

    (cache / "downloads" / "vocab" / "tmpk3_9xq2a").write_bytes(b"half a file")
    assert [e.key for e in c.list_entries("downloads")] == ["vocab/laion.txt"]
    (part,) = [e for e in c.list_entries("downloads", incomplete=True) if not e.complete]
    assert part.key == "vocab/tmpk3_9xq2a"
    assert "incomplete write" in _line(run("list"), "vocab/tmpk3_9xq2a")
