"""The user cache folder and atomic writes.

Everything interpcore caches (concept embeddings, image means, downloaded files) lives under
one folder: ``$INTERP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/interpcore``, else
``~/.cache/interpcore``. Entries are written to a temporary file in the same folder and then
renamed, so a process killed mid-write leaves no entry that loads as valid. Tensors are
stored as safetensors, never pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("INTERP_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "interpcore" if xdg else Path.home() / ".cache" / "interpcore"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def key_hash(*parts) -> str:
    """A short stable hash of everything that changes a cached result."""
    text = json.dumps([str(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success only."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write tensors to a safetensors file atomically (metadata values become strings)."""
    from safetensors.torch import save_file

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    return Path(path)


def load_tensors(path) -> tuple[dict, dict]:
    """Read a safetensors file written by :func:`save_tensors`: (tensors, metadata)."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def list_entries() -> list[tuple[Path, int]]:
    root = cache_dir()
    return sorted(
        (p, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".part")
    )


def clear(pattern: str = "*") -> list[Path]:
    removed = []
    for p, _ in list_entries():
        if p.match(pattern) or pattern == "*":
            p.unlink()
            removed.append(p)
    return removed
