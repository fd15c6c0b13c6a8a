"""The user cache folder and atomic writes.

Everything interpcore caches (concept embeddings, image means, downloaded files) lives under
one folder: ``$INTERP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/interpcore``, else
``~/.cache/interpcore``. Entries are written to a temporary file in the same folder and then
renamed, so a process killed mid-write leaves no entry that loads as valid; the renamed file
has the permissions the user's umask gives (not the temporary file's 0600). Tensors are
stored as safetensors, never pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import InterpError


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("INTERP_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "interpcore" if xdg else Path.home() / ".cache" / "interpcore"
    path = base.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        where = "INTERP_CACHE_DIR" if root else "the cache folder"
        raise InterpError(
            f"{where} cannot be used: {blocker} is a file, not a folder; set INTERP_CACHE_DIR "
            "to a folder (it is created if missing)"
        ) from None
    except PermissionError:
        raise InterpError(
            f"cannot create the cache folder {path} (permission denied); set INTERP_CACHE_DIR "
            "to a folder you can write"
        ) from None
    except OSError as exc:
        raise InterpError(f"cannot create the cache folder {path} ({exc.strerror or exc}); set "
                          "INTERP_CACHE_DIR to a writable folder") from None
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path, directory: bool = False) -> None:
    """Give a file (or folder) made by ``tempfile`` (0600 / 0700) the permissions a plain
    ``open`` (``mkdir``) would have given it under the user's umask."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


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
        apply_umask(tmp)  # mkstemp makes 0600; the entry gets the user's usual permissions
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
