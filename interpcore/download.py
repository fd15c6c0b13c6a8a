"""Published files fetched on first use (checksum-verified, cached, or read from a folder), and
the one switch and probe that decide whether interpcore may use the network at all.

A plugin describes each file it needs with a :class:`RemoteFile` (where it is published, its
SHA-256, the path it has inside a data folder) and calls :func:`locate`, which looks, in
order:

1. in ``folder`` if the caller names one (the file must be there: no fallback);
2. in the folder named by an environment variable (e.g. ``INTERP_VOCAB_DIR``), if set;
3. in the user cache, ``cache_dir(cache_subdir)``;
4. on the network, from ``mirror + relpath`` when a mirror is given, else from the URL.

In a folder a file may sit at its ``relpath`` (``vocab/laion.txt``) or directly
(``laion.txt``). Files from folders are checked against the SHA-256 here; the cache and the
network are pooch's: it keeps a registry of the file's hash, re-checks a cached copy on every
use (a corrupt one is fetched again), streams a download into a temporary file in the cache
folder, retries a failed transfer (``INTERP_DOWNLOAD_RETRIES``, default 2) and moves the file
into place only when the hash matches, so a bad or interrupted download leaves nothing.

Offline mode (:func:`offline`): ``INTERP_OFFLINE=1``, ``HF_HUB_OFFLINE=1`` or
``TRANSFORMERS_OFFLINE=1``, for data files and weights alike. Without it, a host that does not
answer a TCP connection within ``INTERP_NET_TIMEOUT`` seconds (3) is treated the same way
(:func:`reachable`, probed once per process), so a machine without network gets the one
message in seconds, not after a library's retries. When a file is missing and cannot be
downloaded, :class:`~interpcore.errors.OfflineError` says in one message what to download,
from where, and where to put it. This module knows no file by name and never imports torch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from .cache import apply_umask, atomic_path, cache_dir, file_sha256
from .errors import InterpError, OfflineError

USER_AGENT = "interpcore-downloader (python-requests, pooch)"
RETRIES_ENV = "INTERP_DOWNLOAD_RETRIES"
NET_TIMEOUT_ENV = "INTERP_NET_TIMEOUT"
_OFFLINE_VARS = ("INTERP_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when the user asked for no network access (any of the three switches)."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no", "off")
               for v in _OFFLINE_VARS)


_REACHABLE: dict[tuple[str, int], bool] = {}


def hub_url() -> str:
    """The Hugging Face endpoint (``HF_ENDPOINT`` if set, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def reachable(url: str) -> bool:
    """Whether a TCP connection to ``url``'s host (or the HTTPS proxy, when one is set) opens
    within a few seconds (``INTERP_NET_TIMEOUT``, default 3). Probed once per process and host,
    so that a machine without network fails in seconds instead of waiting through a library's
    retries; a host that answers is left to the library to talk to."""
    import socket
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url if "//" in url else f"https://{url}")
    if parts.scheme == "file":
        return True
    proxy = urllib.request.getproxies().get(parts.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "//" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 443
    key = (host, port)
    if key not in _REACHABLE:
        try:
            timeout = float(os.environ.get(NET_TIMEOUT_ENV, "") or 3.0)
        except ValueError:
            timeout = 3.0
        try:
            with socket.create_connection(key, timeout=timeout):
                _REACHABLE[key] = True
        except OSError:
            _REACHABLE[key] = False
    return _REACHABLE[key]


def no_network(url: str | None = None) -> bool:
    """True when downloads must not be tried: offline mode is on, or ``url``'s host (default
    the Hugging Face Hub) cannot be reached."""
    return offline() or not reachable(url or hub_url())


def why_no_network(url: str | None = None) -> str:
    """The reason :func:`no_network` gives, as a clause for a message."""
    if offline():
        return "offline mode is on (INTERP_OFFLINE / HF_HUB_OFFLINE)"
    import urllib.parse

    host = urllib.parse.urlsplit(url or hub_url()).hostname or (url or hub_url())
    return f"{host} cannot be reached (no network?)"


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
    url = mirror.rstrip("/") + "/" + remote.relpath if mirror else remote.url
    hint = (
        f"download {url} and put it at {target}"
        + (f" or in a folder named by {env_var} / folder=" if env_var else "")
    )
    # a good cached copy is used without asking the network (pooch would re-check it too, but
    # only after the probe below)
    if target.is_file() and (not remote.sha256 or file_sha256(target) == remote.sha256):
        return target
    if not download or no_network(url):
        why = ("downloads are turned off" if not download else
               "offline mode (INTERP_OFFLINE is set)" if offline() else why_no_network(url))
        raise OfflineError(f"{remote.label} is not available locally and {why}: {hint}.")
    try:
        return fetch_url(url, target, sha256=remote.sha256, timeout=timeout, what=remote.label)
    except DownloadFailed as exc:
        raise OfflineError(f"{remote.label} could not be downloaded ({exc.reason}): {hint}.") from None


class DownloadFailed(OfflineError):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def _copy_file_url(url: str, output_file, pooch) -> None:
    """pooch's downloader for ``file://`` URLs (a mirror on a shared disk), which it lacks."""
    import urllib.parse
    import urllib.request

    shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), output_file)


def _retries() -> int:
    try:
        return max(0, int(os.environ.get(RETRIES_ENV, "") or 2))
    except ValueError:
        return 2


def fetch_url(url: str, dest, *, sha256: str | None = None, timeout: float = 60.0,
              what: str = "") -> Path:
    """Download ``url`` to ``dest`` with pooch (hash registry, retries, temporary file moved
    into place only when its SHA-256 is ``sha256``); an existing ``dest`` with that hash is
    returned without a download. ``file://`` URLs work too.

    Raises :class:`ChecksumError` on a hash mismatch and :class:`DownloadFailed` (an
    :class:`OfflineError` with a ``reason``) when the URL cannot be read. Nothing is left at
    ``dest`` on failure.
    """
    import pooch
    import requests

    from .progress import progress

    dest = Path(dest)
    known = f"sha256:{sha256.lower()}" if sha256 else None
    store = pooch.create(path=dest.parent, base_url="", registry={dest.name: known},
                         urls={dest.name: url}, retry_if_failed=_retries())
    if url.startswith("file:"):
        downloader = _copy_file_url
    else:
        bar = progress(total=None, desc=f"downloading {what or dest.name}", unit="B")
        if bar.disable:
            bar.close()
        downloader = pooch.HTTPDownloader(progressbar=False if bar.disable else bar,
                                          timeout=timeout, headers={"User-Agent": USER_AGENT})
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # our bar says what is downloaded; pooch would add lines
    fresh = not dest.is_file()
    try:
        store.fetch(dest.name, downloader=downloader)
    except ValueError as exc:
        if "hash" not in str(exc):
            raise DownloadFailed(f"{exc} ({url})") from None
        raise ChecksumError(
            f"the file downloaded from {url} does not have the published SHA-256 "
            f"{sha256[:12]}...; nothing was saved (the file may have changed upstream or the "
            "download was altered)"
        ) from None
    except requests.HTTPError as exc:
        r = exc.response
        raise DownloadFailed(f"HTTP {r.status_code} {r.reason} from {url}") from None
    except (requests.RequestException, OSError) as exc:
        raise DownloadFailed(f"{_first_line(exc)} ({url})") from None
    finally:
        logger.setLevel(level)
    if fresh:
        apply_umask(dest)  # pooch's temporary file is 0600; the entry gets the usual permissions
    return dest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def copy_into(path, folder, relpath: str | None = None) -> Path:
    """Copy ``path`` into ``folder`` (atomically), at ``relpath`` or under its own name."""
    folder = Path(folder).expanduser()
    final = folder / (relpath or Path(path).name)
    if final.exists() and final.resolve() == Path(path).resolve():
        return final
    with atomic_path(final) as tmp:
        shutil.copyfile(path, tmp)
    return final
