"""The user cache folder and atomic writes.

Everything interpcore caches (concept embeddings, image means, downloaded files) lives under
one folder: ``$INTERP_CACHE_DIR`` if set, else the platform's user cache folder for
``interpcore`` as platformdirs gives it (``$XDG_CACHE_HOME/interpcore`` or
``~/.cache/interpcore`` on Linux, ``~/Library/Caches/interpcore`` on macOS). Entries are written to a temporary file in the same folder and then
renamed, so a process killed mid-write leaves no entry that loads as valid; the renamed file
has the permissions the user's umask gives (not the temporary file's 0600). Tensors are
stored as safetensors, never pickle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .errors import InterpError


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("INTERP_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("interpcore", appauthor=False))
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


#: A folder holding one of these files is one entry (a job, a PRS store), not one per file.
ENTRY_MARKERS = ("manifest.json", "meta.json")


@dataclasses.dataclass
class Entry:
    """One cache entry: a file, or a folder with a manifest (a job, a PRS store)."""

    kind: str  #: the top folder: concepts, image_means, downloads, jobs, ... ("(top)" for loose files)
    key: str  #: the path below the kind
    path: Path
    bytes: int
    files: int
    age_s: int  #: seconds since its newest file was written
    complete: bool  #: False for the ``*.part`` temporary of an interrupted write


def _is_temporary(name: str) -> bool:
    """Our atomic writes' ``.name.XXXX.part`` files, or the ``tmpXXXXXXXX`` file pooch streams a
    download into (its name cannot be chosen), left behind when a process was killed."""
    return name.endswith(".part") or re.fullmatch(r"tmp[a-z0-9_]{8}", name) is not None


def list_entries(kind: str | None = None, pattern: str = "*", *, incomplete: bool = False) -> list[Entry]:
    """The cache entries of ``kind`` (all kinds by default) whose key, ``kind/key`` or name
    matches the wildcard ``pattern``. ``incomplete=True`` adds the temporaries that
    interrupted writes left (never valid entries, but they take space)."""
    root = cache_dir()
    groups: dict[Path, list[tuple[Path, bool]]] = {}
    for p in sorted(root.rglob("*")):
        done = not _is_temporary(p.name)
        if not p.is_file() or not (done or incomplete):
            continue
        rel = p.relative_to(root)
        head = p
        for n in range(2, len(rel.parts)):  # the shallowest folder below a kind that is an entry
            folder = root.joinpath(*rel.parts[:n])
            if any((folder / m).is_file() for m in ENTRY_MARKERS):
                head = folder
                break
        groups.setdefault(head, []).append((p, done))
    now = time.time()
    out = []
    for head, members in sorted(groups.items()):
        rel = head.relative_to(root)
        k = rel.parts[0] if len(rel.parts) > 1 else "(top)"
        key = Path(*rel.parts[1:]).as_posix() if len(rel.parts) > 1 else rel.as_posix()
        if kind is not None and k != kind:
            continue
        if pattern != "*" and not any(fnmatch.fnmatch(x, pattern) for x in (key, f"{k}/{key}", head.name)):
            continue
        stats = [p.stat() for p, _ in members]
        out.append(Entry(
            k, key, head, sum(st.st_size for st in stats), len(members),
            max(0, int(now - max(st.st_mtime for st in stats))), all(done for _, done in members),
        ))
    return out


def clear(pattern: str = "*", kind: str | None = None) -> list[Entry]:
    """Delete the entries :func:`list_entries` gives for ``kind`` and ``pattern``, each as a
    whole (a job's folder with all its shards), interrupted writes included. Returns them."""
    removed = []
    for entry in list_entries(kind, pattern, incomplete=True):
        try:
            shutil.rmtree(entry.path) if entry.path.is_dir() else entry.path.unlink()
        except FileNotFoundError:  # removed meanwhile (another process clearing too)
            continue
        removed.append(entry)
    return removed
