"""FALCON caption retrieval at scale: one pass over the pool for all groups vs one per group.

Writes a synthetic LAION-style caption pool (1,000,000 x 512 fp16 embeddings in numbered
``text_emb_<n>.npy`` shards, with matching ``captions_<n>.txt`` files) into a temporary
folder, then captions the crops and low images of 50 feature groups:

* one pass: all 50 groups' query embeddings retrieved together (what interpcore does);
  run in a child process so that its peak resident memory (``ru_maxrss``, which includes
  the memory-mapped pages it touched) is measured alone;
* per group: the reference's strategy, one full pass over the pool per group; timed for a
  few groups and extrapolated to 50 (said so in the table).

Run ``python bench/bench_falcon.py [--rows N]``; ``main()`` returns a markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 1_000_000
DIM = 512
SHARD_ROWS = 100_000
GROUPS = 50
HIGH_PER_GROUP = 20  # crops per group (interpcore's default caps crops at 50)
LOW_PER_GROUP = 10  # the reference's number of lowly activating images
TIMED_PER_GROUP_PASSES = 3


def write_pool(folder: Path, rows: int = ROWS, dim: int = DIM, shard_rows: int = SHARD_ROWS,
               seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "text_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    words = ["red", "green", "blue", "circle", "square", "star", "small", "large", "grass",
             "water", "sand", "snow", "brick", "dog", "cat", "car", "tree", "house"]
    start, n = 0, 0
    while start < rows:
        size = min(shard_rows, rows - start)
        path = folder / "text_emb" / f"text_emb_{n:04d}.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(size, dim))
        for a in range(0, size, 10_000):  # small blocks: the writer stays small too
            b = min(size, a + 10_000)
            x = rng.standard_normal((b - a, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            mm[a:b] = x.astype(np.float16)
        mm.flush()
        del mm
        picks = rng.integers(0, len(words), size=(size, 3))
        lines = [f"a {words[p[0]]} {words[p[1]]} near a {words[p[2]]} #{start + i}"
                 for i, p in enumerate(picks)]
        (folder / "metadata" / f"captions_{n:04d}.txt").write_text("\n".join(lines) + "\n")
        start += size
        n += 1
    return folder


_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from interp_falcon.pool import ShardPool, retrieve, top_captions

folder, mode = sys.argv[1], sys.argv[2]
groups, per_high, per_low, timed = (int(v) for v in sys.argv[4:8])
rng = np.random.default_rng(1)
per = per_high + per_low
queries = rng.standard_normal((groups * per, 512)).astype(np.float32)
pool = ShardPool(folder)
passes = 0
orig = pool.chunks
def counting(chunk_size):
    global passes
    passes += 1
    yield from orig(chunk_size)
pool.chunks = counting
out = {"rows": len(pool), "queries": int(queries.shape[0])}
if mode == "one-pass":
    t = time.perf_counter()
    ret = retrieve(queries, pool, k=20)
    t_ret = time.perf_counter() - t
    t = time.perf_counter()
    caps = top_captions(ret, pool, k=5)
    out.update(seconds=t_ret, caption_lookup_seconds=time.perf_counter() - t,
               captions=sum(len(c) for c in caps))
else:
    times = []
    for g in range(timed):
        t = time.perf_counter()
        ret = retrieve(queries[g * per:(g + 1) * per], pool, k=20)
        top_captions(ret, pool, k=5)
        times.append(time.perf_counter() - t)
    out.update(seconds_per_group=times)
out["passes"] = passes
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _child(folder: Path, mode: str, groups: int, timed: int) -> dict:
    plugin_dir = str(Path(__file__).resolve().parents[1] / "plugins")
    env = dict(os.environ, INTERP_QUIET="1")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), mode, plugin_dir, str(groups),
         str(HIGH_PER_GROUP), str(LOW_PER_GROUP), str(timed)],
        capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(rows: int = ROWS, groups: int = GROUPS) -> str:
    with tempfile.TemporaryDirectory(prefix="falcon-bench-") as tmp:
        folder = Path(tmp) / "pool"
        t = time.perf_counter()
        write_pool(folder, rows=rows)
        t_write = time.perf_counter() - t
        size_gb = sum(p.stat().st_size for p in (folder / "text_emb").iterdir()) / 1e9
        one = _child(folder, "one-pass", groups, 0)
        per = _child(folder, "per-group", groups, min(TIMED_PER_GROUP_PASSES, groups))
    per_mean = sum(per["seconds_per_group"]) / len(per["seconds_per_group"])
    per_total = per_mean * groups
    one_total = one["seconds"] + one["caption_lookup_seconds"]
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        f"## FALCON: captioning {groups} groups from a {rows:,}-caption pool",
        "",
        f"Synthetic LAION-style pool: {one['rows']:,} captions, {DIM}-d fp16 embeddings in "
        f"{-(-rows // SHARD_ROWS)} memory-mapped `text_emb_<n>.npy` shards ({size_gb:.2f} GB, "
        f"written in {t_write:.0f} s), captions in `captions_<n>.txt`. {groups} groups x "
        f"({HIGH_PER_GROUP} crops + {LOW_PER_GROUP} low images) = {one['queries']:,} query "
        f"embeddings, top-5 distinct captions each (20 candidates kept). CPU, "
        f"OMP_NUM_THREADS={threads}, pool files in the page cache (just written).",
        "",
        "| strategy | pool passes | time | peak RSS |",
        "|---|---|---|---|",
        f"| one pass for all groups (interpcore) | {one['passes']} | {one_total:.1f} s "
        f"(retrieval {one['seconds']:.1f} s + caption lookup {one['caption_lookup_seconds']:.1f} s)"
        f" | {one['peak_rss_mb']:.0f} MB |",
        f"| one pass per group (reference) | {groups} | {per_total:.1f} s, extrapolated from "
        f"{len(per['seconds_per_group'])} timed groups ({per_mean:.2f} s each) | "
        f"{per['peak_rss_mb']:.0f} MB |",
        "",
        f"Speed-up: {per_total / one_total:.1f}x. Peak RSS includes the memory-mapped pages "
        "touched; each chunk is mapped on its own and unmapped after use, so it stays at about "
        "one chunk plus the score matrix whatever the pool size "
        f"({'under' if one['peak_rss_mb'] < 2048 else 'OVER'} the 2 GB target).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--groups", type=int, default=GROUPS)
    a = ap.parse_args()
    print(main(a.rows, a.groups))
