"""bench/run: runs every bench_*.py main() with a time limit and writes BENCHMARKS.md that
records failures and time-outs as such."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "bench" / "run"


def _bench(folder: Path, name: str, body: str):
    (folder / f"bench_{name}.py").write_text(body)


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, str(RUN), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_runner_records_ok_failed_and_timed_out(tmp_path):
    _bench(tmp_path, "good", "def main():\n    return '## Good\\n\\n| x | y |\\n|---|---|\\n| 1 | 42.5 |\\n'\n")
    _bench(tmp_path, "broken", "def main():\n    raise ValueError('solver diverged')\n")
    _bench(tmp_path, "slow", "TIME_LIMIT = 2\nimport time\ndef main():\n    time.sleep(60)\n    return 'x'\n")
    _bench(tmp_path, "empty", "def main():\n    return None\n")
    out = tmp_path / "B.md"
    proc = _run("--dir", tmp_path, "--out", out)
    assert proc.returncode == 1  # not everything passed
    text = out.read_text()
    assert "## Machine" in text and "## Versions" in text and "torch" in text
    assert "| 1 | 42.5 |" in text
    assert "| bench_good | ok |" in text
    assert "| bench_broken | failed |" in text and "solver diverged" in text
    assert "| bench_slow | timed out |" in text and "time limit of 2 s" in text
    assert "| bench_empty | failed |" in text and "not a markdown string" in text


def test_only_replaces_its_section_and_keeps_the_others(tmp_path):
    _bench(tmp_path, "a", "def main():\n    return '## A\\n\\nfirst'\n")
    _bench(tmp_path, "b", "def main():\n    return '## B\\n\\nbee'\n")
    out = tmp_path / "B.md"
    assert _run("--dir", tmp_path, "--out", out).returncode == 0
    _bench(tmp_path, "a", "def main():\n    return '## A\\n\\nsecond'\n")
    assert _run("--dir", tmp_path, "--out", out, "--only", "a").returncode == 0
    text = out.read_text()
    assert "second" in text and "first" not in text and "bee" in text
    assert "kept from the previous run" in text


def test_list_reads_declared_limits_without_running(tmp_path):
    _bench(tmp_path, "x", "TIME_LIMIT = 77\nraise SystemExit('must not be imported')\n")
    proc = _run("--dir", tmp_path, "--list")
    assert proc.returncode == 0 and "bench_x" in proc.stdout and "77 s" in proc.stdout


def test_common_helpers():
    sys.path.insert(0, str(REPO / "bench"))
    import common

    t = common.time_call(sum, [1, 2, 3], repeat=3, warmup=1)
    assert t["result"] == 6 and len(t["runs"]) == 3 and t["min"] <= t["median"] <= t["max"]
    _, peak = common.peak_traced(lambda: bytearray(8 * 2**20))
    assert 8 * 2**20 <= peak < 12 * 2**20
    iso = common.run_isolated("common:fmt_bytes", 3 * 2**20)
    assert iso["result"] == "3.0 MiB" and iso["max_rss"] > 2**20
    assert common.md_table(["a"], [["x|y"]]).splitlines()[2] == "| x\\|y |"
