"""Published files fetched on first use: checksum-verified, cached, or read from a folder.

A plugin describes each file it needs with a :class:`RemoteFile` (where it is published, its
SHA-256, the path it has inside a data folder) and calls :func:`locate`, which looks, in
order:

1. in ``folder`` if the caller names one (the file must be there: no fallback);
2. in the folder named by an environment variable (e.g. ``INTERP_VOCAB_DIR``), if set;
3. in the user cache, ``cache_dir(cache_subdir)``;
4. on the network, from ``mirror + relpath`` when a mirror is given, else from the URL.

In a folder a file may sit at its ``relpath`` (``vocab/laion.txt``) or directly
(``laion.txt``). Files from folders and the cache are checked against the SHA-256; a
download is hashed while it streams into a temporary file and only renamed into the cache
when the hash matches, so a bad or interrupted download leaves nothing behind.

``INTERP_OFFLINE=1`` forbids network access. When a file is missing and cannot be
downloaded, :class:`~interpcore.errors.OfflineError` says in one message what to download,
from where, and where to put it. This module knows no file by name and never imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from .cache import atomic_path, cache_dir, file_sha256
from .errors import InterpError, OfflineError

USER_AGENT = "interpcore-downloader (python-urllib)"


class ChecksumError(InterpError):
    """A file's SHA-256 is not the published one."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A published file: its URL, SHA-256 and path inside a data folder."""

    relpath: str  #: e.g. ``vocab/laion.txt``; also its place in the cache folder
    url: str
    sha256: str | None = None
    what: str = ""  #: human description for messages, e.g. "the LAION vocabulary"

    @property
    def filename(self) -> str:
        return Path(self.relpath).name

    @property
    def label(self) -> str:
        return self.what or self.filename


def offline() -> bool:
    return os.environ.get("INTERP_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _candidates(folder: Path, remote: RemoteFile) -> list[Path]:
    out = [folder / remote.relpath]
    if remote.filename != remote.relpath:
        out.append(folder / remote.filename)
    return out


def _check(path: Path, remote: RemoteFile, verify: bool, origin: str) -> Path:
    if verify and remote.sha256:
        got = file_sha256(path)
        if got != remote.sha256:
            raise ChecksumError(
                f"{path} ({origin}) has SHA-256 {got[:12]}..., not the published "
                f"{remote.sha256[:12]}... of {remote.label}; replace it with the file from "
                f"{remote.url}, or pass verify=False to use it anyway"
            )
    return path


def cached_path(remote: RemoteFile, cache_subdir: str = "downloads") -> Path:
    """Where :func:`locate` keeps a downloaded copy of ``remote``."""
    return cache_dir(cache_subdir) / remote.relpath


def locate(
    remote: RemoteFile,
    *,
    folder=None,
    env_var: str | None = None,
    cache_subdir: str = "downloads",
    mirror: str | None = None,
    verify: bool = True,
    download: bool = True,
    timeout: float = 60.0,
) -> Path:
    """The local path of ``remote``, downloading it into the cache if needed (see module doc)."""
    if folder is not None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InterpError(f"folder not found: {folder} (named to hold {remote.filename})")
        for p in _candidates(folder, remote):
            if p.is_file():
                return _check(p, remote, verify, f"from folder {folder}")
        raise InterpError(
            f"{remote.filename} is not in {folder} (looked for "
            + " and ".join(str(p) for p in _candidates(folder, remote))
            + f"); download it from {remote.url}"
        )
    env_folder = os.environ.get(env_var, "").strip() if env_var else ""
    if env_folder:
        for p in _candidates(Path(env_folder).expanduser(), remote):
            if p.is_file():
                return _check(p, remote, verify, f"from ${env_var}")
    target = cached_path(remote, cache_subdir)
    if target.is_file():
        try:
            return _check(target, remote, True, "in the cache")
        except ChecksumError:
            target.unlink()  # corrupt cache entry: fetch it again
    url = mirror.rstrip("/") + "/" + remote.relpath if mirror else remote.url
    hint = (
        f"download {url} and put it at {target}"
        + (f" or in a folder named by {env_var} / folder=" if env_var else "")
    )
    if not download or offline():
        why = "offline mode (INTERP_OFFLINE is set)" if offline() else "downloads are turned off"
        raise OfflineError(f"{remote.label} is not available locally and {why}: {hint}.")
    from .weights import reachable, why_no_network

    if url.startswith(("http://", "https://")) and not reachable(url):  # seconds, not a timeout
        raise OfflineError(f"{remote.label} is not available locally and {why_no_network(url)}: {hint}.")
    try:
        fetch_url(url, target, sha256=remote.sha256, timeout=timeout, what=remote.label)
    except DownloadFailed as exc:
        raise OfflineError(f"{remote.label} could not be downloaded ({exc.reason}): {hint}.") from None
    return target


class DownloadFailed(OfflineError):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def fetch_url(url: str, dest, *, sha256: str | None = None, timeout: float = 60.0,
              what: str = "") -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` (the full hex digest, or
    a prefix of it as some model hubs publish) before the rename.

    Raises :class:`ChecksumError` on a hash mismatch and an :class:`OfflineError` (with a
    ``reason`` attribute) when the URL cannot be read. Nothing is left at ``dest`` (nor any
    temporary file) on failure. ``file://`` URLs work too.
    """
    from .progress import progress

    dest = Path(dest)
    h = hashlib.sha256()
    label = what or Path(dest).name
    with atomic_path(dest) as tmp:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as src, open(tmp, "wb") as out:
                headers = getattr(src, "headers", None)
                length = headers.get("Content-Length") if headers else None
                total = int(length) if length and str(length).isdigit() else None
                bar = progress(total=total, desc=f"downloading {label}", unit="B")
                try:
                    while True:
                        block = src.read(1 << 16)
                        if not block:
                            break
                        h.update(block)
                        out.write(block)
                        bar.update(len(block))
                finally:
                    bar.close()
                if total is not None and out.tell() != total:
                    raise DownloadFailed(
                        f"connection closed after {out.tell()} of {total} bytes from {url}"
                    )
        except urllib.error.HTTPError as exc:
            raise DownloadFailed(f"HTTP {exc.code} {exc.reason} from {url}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadFailed(f"{reason} ({url})") from None
        if sha256 and not h.hexdigest().startswith(sha256.lower()):
            raise ChecksumError(
                f"the file downloaded from {url} has SHA-256 {h.hexdigest()[:12]}..., not "
                f"the published {sha256[:12]}...; nothing was saved (the file may have "
                "changed upstream or the download was altered)"
            )
    return dest


def copy_into(path, folder, relpath: str | None = None) -> Path:
    """Copy ``path`` into ``folder`` (atomically), at ``relpath`` or under its own name."""
    folder = Path(folder).expanduser()
    final = folder / (relpath or Path(path).name)
    if final.exists() and final.resolve() == Path(path).resolve():
        return final
    with atomic_path(final) as tmp:
        shutil.copyfile(path, tmp)
    return final
