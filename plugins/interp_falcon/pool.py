"""Caption pools and one-pass retrieval of the best captions for many images at once.

A caption pool is a list of captions plus their CLIP text embeddings (in the captioner's
space). Two kinds:

* :class:`ShardPool` - a folder of numbered ``.npy`` embedding shards with matching caption
  files, the layout LAION publishes (see :func:`discover_shards` for what is accepted). The
  shards are memory-mapped and read one chunk at a time, so the pool may be far larger than
  memory.
* :class:`TensorPool` - captions embedded on the fly from a text file or a vocabulary (cached
  in the user cache, keyed by captioner and text).

:func:`retrieve` streams over a pool ONCE for any number of query embeddings (all crops and
low images of all groups of a run) keeping a running top-k per query; the reference re-reads
the whole pool once per group.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interpcore import InterpError
from interpcore.progress import progress

_SHARD_RE = re.compile(r"^text_emb_(\d+)\.npy$")


# --------------------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------------------


class CaptionPool:
    """Interface: ``dim``, ``len()``, ``chunks(chunk_size)`` and ``captions(indices)``."""

    name: str = "?"
    dim: int = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def chunks(self, chunk_size: int):
        """Yield ``(start, array)`` with ``array`` of shape ``(n, dim)`` (any float dtype)."""
        raise NotImplementedError

    def captions(self, indices) -> list[str]:
        raise NotImplementedError


class TensorPool(CaptionPool):
    """Captions with embeddings held in memory (a ``(N, dim)`` array or tensor)."""

    def __init__(self, texts, embeddings, name: str = "texts"):
        emb = embeddings.detach().cpu().numpy() if hasattr(embeddings, "detach") else np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(texts):
            raise InterpError(
                f"caption pool '{name}': {len(texts)} captions but embeddings of shape {emb.shape}"
            )
        self.texts = list(texts)
        self.emb = emb
        self.dim = int(emb.shape[1])
        self.name = name

    def __len__(self):
        return len(self.texts)

    def chunks(self, chunk_size):
        for start in range(0, len(self.texts), chunk_size):
            yield start, self.emb[start : start + chunk_size]

    def captions(self, indices):
        return [self.texts[int(i)] for i in indices]


@dataclass
class _Shard:
    number: int
    path: Path
    rows: int
    dim: int
    dtype: np.dtype
    offset: int  # byte offset of the data in the .npy file
    captions: Path | None  # per-shard caption file (.txt or .parquet), None with a global file
    num: str = ""  # the number as written in the file name (zero padding kept)


def _npy_header(path: Path) -> tuple[tuple, np.dtype, bool, int]:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError) as exc:
            raise InterpError(f"{path} is not a readable .npy file ({exc})") from None
        return shape, dtype, fortran, f.tell()


def discover_shards(folder) -> tuple[list[_Shard], Path | None]:
    """Find embedding shards and their caption files in ``folder``.

    Accepted layout (LAION publishes ``text_emb/text_emb_{n}.npy`` next to
    ``metadata/metadata_{n}.parquet``; LAION-5B numbers them with four digits, LAION-400M
    without padding):

    * embeddings: ``text_emb_<n>.npy`` files, each a 2-D float16/float32 array ``(rows, d)``,
      directly in ``folder`` or in ``folder/text_emb`` or ``folder/text_emb_filtered``;
      shards are read in numeric order of ``<n>``.
    * captions, one of (looked for in ``folder`` and ``folder/metadata``):
        - per shard ``captions_<n>.txt`` or ``metadata_<n>.txt``: one caption per line, as
          many lines as the shard has rows;
        - per shard ``metadata_<n>.parquet`` with a ``caption`` column (LAION's own files;
          needs ``pyarrow``);
        - one ``captions.txt`` for all shards: line i is the caption of row i of the shards
          concatenated in order (the reference's filtered layout).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InterpError(f"caption pool folder not found: {folder}")
    emb_dir = None
    for cand in (folder, folder / "text_emb", folder / "text_emb_filtered"):
        if cand.is_dir() and any(_SHARD_RE.match(p.name) for p in cand.iterdir()):
            emb_dir = cand
            break
    if emb_dir is None:
        raise InterpError(
            f"no text_emb_<n>.npy embedding shards in {folder} (nor in its text_emb/ or "
            "text_emb_filtered/ subfolder); see docs/falcon.md for the caption pool layout"
        )
    meta_dirs = [folder, folder / "metadata", emb_dir]
    global_file = next((d / "captions.txt" for d in meta_dirs if (d / "captions.txt").is_file()), None)
    shards = []
    for p in sorted(emb_dir.iterdir()):
        m = _SHARD_RE.match(p.name)
        if not m:
            continue
        shape, dtype, fortran, offset = _npy_header(p)
        if len(shape) != 2 or fortran or dtype.kind != "f":
            raise InterpError(
                f"{p}: expected a C-ordered 2-D float array (rows, dim), got shape {shape}, "
                f"dtype {dtype}"
            )
        num = m.group(1)
        cap = None
        if global_file is None:
            names = [f"captions_{num}.txt", f"metadata_{num}.txt", f"metadata_{num}.parquet"]
            cap = next((d / n for n in names for d in meta_dirs if (d / n).is_file()), None)
            if cap is None:
                raise InterpError(
                    f"no captions for embedding shard {p.name}: expected captions_{num}.txt, "
                    f"metadata_{num}.txt or metadata_{num}.parquet (or one captions.txt) in "
                    f"{folder} or {folder / 'metadata'}"
                )
        shards.append(_Shard(int(num), p, int(shape[0]), int(shape[1]), dtype, offset, cap, num))
    shards.sort(key=lambda s: s.number)
    dims = {s.dim for s in shards}
    if len(dims) != 1:
        raise InterpError(f"embedding shards in {emb_dir} have different widths: {sorted(dims)}")
    return shards, global_file


class ShardPool(CaptionPool):
    """A LAION-style pool of memory-mapped embedding shards (see :func:`discover_shards`).

    Each chunk is mapped on its own and unmapped after use, so the resident memory stays at
    about one chunk however large the shards are.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.shards, self.global_captions = discover_shards(self.folder)
        self.dim = self.shards[0].dim
        self.name = str(self.folder)
        self.starts = np.cumsum([0] + [s.rows for s in self.shards])

    def __len__(self):
        return int(self.starts[-1])

    def chunks(self, chunk_size):
        for shard, base in zip(self.shards, self.starts[:-1]):
            for a in range(0, shard.rows, chunk_size):
                n = min(chunk_size, shard.rows - a)
                rowbytes = shard.dim * shard.dtype.itemsize
                mm = np.memmap(shard.path, dtype=shard.dtype, mode="r",
                               offset=shard.offset + a * rowbytes, shape=(n, shard.dim))
                try:
                    yield int(base + a), mm
                finally:
                    del mm

    # -- captions -----------------------------------------------------------------------
    def captions(self, indices) -> list[str]:
        indices = [int(i) for i in indices]
        found: dict[int, str] = {}
        if self.global_captions is not None:
            found = _read_lines(self.global_captions, set(indices))
        else:
            by_shard: dict[int, set[int]] = {}
            for i in indices:
                s = int(np.searchsorted(self.starts, i, side="right") - 1)
                by_shard.setdefault(s, set()).add(i - int(self.starts[s]))
            for s, rows in by_shard.items():
                shard = self.shards[s]
                got = _read_shard_captions(shard, rows)
                found.update({int(self.starts[s]) + r: t for r, t in got.items()})
        missing = [i for i in indices if i not in found]
        if missing:
            raise InterpError(
                f"caption pool {self.folder}: no caption for row {missing[0]} (the caption "
                "files have fewer lines than the embedding shards have rows)"
            )
        return [found[i] for i in indices]


def _read_lines(path: Path, wanted: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    if not wanted:
        return out
    last = max(wanted)
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if i in wanted:
                out[i] = line.rstrip("\n").rstrip("\r")
            if i >= last:
                break
    return out


def _read_shard_captions(shard: _Shard, rows: set[int]) -> dict[int, str]:
    path = shard.captions
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InterpError(
                f"reading {path.name} needs pyarrow (pip install pyarrow), or convert the "
                f"captions to captions_{shard.num}.txt, one per line"
            ) from None
        table = pq.read_table(path, columns=["caption"])
        if table.num_rows != shard.rows:
            raise InterpError(
                f"{path} has {table.num_rows} captions but {shard.path.name} has {shard.rows} rows"
            )
        col = table.column("caption")
        return {r: ("" if col[r].as_py() is None else str(col[r].as_py())) for r in rows}
    got = _read_lines(path, rows)
    return got


# --------------------------------------------------------------------------------------
# Building pools
# --------------------------------------------------------------------------------------


def dedup_texts(texts) -> list[str]:
    """Exact de-duplication, first occurrence kept, order kept; blank lines dropped."""
    seen: set[str] = set()
    out = []
    for t in texts:
        t = t.strip()
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def embed_texts(captioner, texts, *, batch_size: int = 256, cache: bool = True):
    """Normalized text embeddings ``(N, d)`` float16 of ``texts``, cached by captioner + text."""
    import torch

    from interpcore import cache as icache
    from interpcore.base import Vocabulary

    key = icache.key_hash("falcon-pool", captioner.cache_key, Vocabulary("x", texts).content_hash)
    path = icache.cache_dir("falcon", "pools") / f"{key}.safetensors"
    if cache and path.exists():
        try:
            tensors, _ = icache.load_tensors(path)
            emb = tensors["embeddings"]
            if emb.shape[0] == len(texts):
                return emb
        except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed
            pass
    outs = []
    for start in progress(range(0, len(texts), batch_size), desc="embedding captions",
                          total=(len(texts) + batch_size - 1) // batch_size, unit="batch"):
        outs.append(captioner.encode_text(texts[start : start + batch_size], normalize=True,
                                          batch_size=batch_size).half().cpu())
    emb = torch.cat(outs) if outs else torch.zeros(0, captioner.embed_dim or 0, dtype=torch.float16)
    if cache:
        icache.save_tensors(path, {"embeddings": emb},
                            {"captioner": captioner.cache_key, "count": len(texts)})
    return emb


def load_pool(spec, captioner=None, *, cache: bool = True) -> CaptionPool:
    """A caption pool from a spec.

    ``spec`` may be a :class:`CaptionPool`, a folder of embedding shards, a text file (one
    caption per line, embedded with ``captioner``), a :class:`interpcore.Vocabulary`, or a
    registered vocabulary name, also embedded with ``captioner``.
    """
    if isinstance(spec, CaptionPool):
        return spec
    from interpcore import Vocabulary, get_vocabulary

    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        return ShardPool(spec)
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_file():
        path = Path(spec)
        try:
            texts = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise InterpError(f"caption file {path} is not UTF-8 text") from None
        name = str(path)
    else:
        vocab = spec if isinstance(spec, Vocabulary) else get_vocabulary(str(spec))
        texts, name = list(vocab.concepts), vocab.name
    texts = dedup_texts(texts)
    if not texts:
        raise InterpError(f"caption pool '{name}' has no captions")
    if captioner is None:
        raise InterpError(f"caption pool '{name}' must be embedded: give a captioner backbone")
    emb = embed_texts(captioner, texts, cache=cache)
    return TensorPool(texts, emb, name=name)


# --------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------


@dataclass
class Retrieval:
    """Per query: pool row indices and cosine similarities of the best candidates, best
    first, plus the log-sum-exp of ``temperature * cosine`` over the whole pool."""

    indices: np.ndarray  # (M, K) int64
    sims: np.ndarray  # (M, K) float32
    logsumexp: np.ndarray  # (M,) float64
    temperature: float
    pool_size: int
    #: pool rows read divided by the pool's size: how many passes the retrieval really made
    #: (counted while reading, so a pool whose chunks overlap or repeat shows it)
    passes: float = 0.0


def retrieve(queries, pool: CaptionPool, *, k: int = 20, chunk_size: int = 16384,
             temperature: float = 100.0, desc: str = "caption pool", device=None) -> Retrieval:
    """The ``k`` pool rows most cosine-similar to each query, in ONE pass over the pool.

    ``queries``: ``(M, d)`` array or tensor (normalized here). Each chunk is converted to
    float32, row-normalized, scored against all queries, and merged into a running top-k;
    the running log-sum-exp gives exact softmax weights over the whole pool. ``device``
    (default CPU): where the scores are computed (e.g. the captioner's GPU).
    """
    import torch

    q = torch.as_tensor(np.asarray(queries.detach().cpu() if hasattr(queries, "detach") else queries),
                        dtype=torch.float32)
    if q.dim() != 2:
        raise InterpError(f"queries must be (M, d), got shape {tuple(q.shape)}")
    if q.shape[1] != pool.dim:
        raise InterpError(
            f"caption pool '{pool.name}' has {pool.dim}-d embeddings but the captioner gives "
            f"{q.shape[1]}-d ones: the pool must be embedded with the captioner's model"
        )
    dev = torch.device("cpu") if device is None else torch.device(device)
    q = torch.nn.functional.normalize(q, dim=1).to(dev)
    m = q.shape[0]
    n = len(pool)
    kk = max(1, min(k, n))
    best_v = torch.full((m, kk), float("-inf"), device=dev)
    best_i = torch.full((m, kk), -1, dtype=torch.long, device=dev)
    lse = torch.full((m,), float("-inf"), dtype=torch.float64, device=dev)
    bar = progress(total=n, desc=desc, unit="cap")
    read = 0
    try:
        for start, arr in pool.chunks(chunk_size):
            read += len(arr)
            if dev.type == "cpu":
                c = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            else:  # copy the stored dtype, convert on the device
                c = torch.from_numpy(np.ascontiguousarray(arr)).to(dev).float()
            c = torch.nn.functional.normalize(c, dim=1)
            s = q @ c.T  # (M, n_chunk)
            lse = torch.logaddexp(lse, torch.logsumexp(s * temperature, dim=1).double())
            kc = min(kk, s.shape[1])
            v, i = s.topk(kc, dim=1)
            cat_v = torch.cat([best_v, v], dim=1)
            cat_i = torch.cat([best_i, i + start], dim=1)
            best_v, pos = cat_v.topk(kk, dim=1)
            best_i = cat_i.gather(1, pos)
            bar.update(c.shape[0])
            del c, s
    finally:
        bar.close()
    return Retrieval(best_i.cpu().numpy(), best_v.cpu().numpy(), lse.cpu().numpy(), temperature, n,
                     passes=read / max(n, 1))


def top_captions(ret: Retrieval, pool: CaptionPool, *, k: int = 5, weights: str = "pool"
                 ) -> list[list[tuple[str, float]]]:
    """The ``k`` best distinct captions per query with their weights.

    Captions are de-duplicated exactly (identical text counted once; the candidate list is
    longer than ``k`` for that). ``weights``: ``"pool"`` - softmax of ``temperature *
    cosine`` over the whole pool (the reference's caption score); ``"topk"`` - the same
    softmax renormalized over the ``k`` kept captions; ``"cosine"`` - the raw cosine.
    """
    if weights not in ("pool", "topk", "cosine"):
        raise InterpError(f"unknown caption weighting '{weights}'; use pool, topk or cosine")
    valid = ret.indices[ret.indices >= 0]
    uniq = np.unique(valid)
    texts = dict(zip(uniq.tolist(), pool.captions(uniq.tolist())))
    out = []
    for row_i, row_v, lse in zip(ret.indices, ret.sims, ret.logsumexp):
        kept: list[tuple[str, float]] = []
        seen: set[str] = set()
        for idx, sim in zip(row_i.tolist(), row_v.tolist()):
            if idx < 0:
                continue
            t = texts[idx]
            if t in seen:
                continue
            seen.add(t)
            kept.append((t, float(sim)))
            if len(kept) == k:
                break
        if weights == "pool":
            kept = [(t, float(np.exp(ret.temperature * s - lse))) for t, s in kept]
        elif weights == "topk" and kept:
            logits = np.array([ret.temperature * s for _, s in kept])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            kept = [(t, float(w)) for (t, _), w in zip(kept, p)]
        out.append(kept)
    return out
