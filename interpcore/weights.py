"""Finding, fetching and reading model weights, with one clear message when they are missing.

Backbone plugins use these helpers so that every library behaves the same way offline:

* :func:`hub_file` looks in the Hugging Face cache first (no network), then downloads unless
  offline mode is on, and on failure raises ONE :class:`~interpcore.errors.OfflineError`
  naming the model, the tag, where it looked, and how to supply the file by hand.
* :func:`url_file` downloads a URL into a cache folder atomically (temporary file, checksum,
  rename), so an interrupted download never leaves a file that looks complete.
* :func:`read_state_dict` reads ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` (tensors only,
  ``weights_only=True``) and TorchScript archives (OpenAI's CLIP files), with a message
  naming the file when it is not a checkpoint.
* :func:`load_checked` loads a state dict into a model and, when keys or shapes disagree,
  says which keys mismatch instead of printing torch's wall of text.

Offline mode: ``INTERP_OFFLINE=1``, ``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``. Without
it, a host that does not answer a TCP connection within ``INTERP_NET_TIMEOUT`` seconds (3) is
treated the same way (:func:`reachable`, probed once per process), so a machine without
network gets the one message in seconds, not after the libraries' retries.
Only the functions that need torch import it.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path

from .errors import InterpError, OfflineError


def offline() -> bool:
    """True when the user asked for no network access."""
    for var in ("INTERP_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


_REACHABLE: dict[tuple[str, int], bool] = {}
NET_TIMEOUT_ENV = "INTERP_NET_TIMEOUT"


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


def hf_cache_dir(cache_dir=None) -> str:
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def hub_file(
    repo_id: str,
    filenames,
    *,
    what: str,
    revision: str | None = None,
    cache_dir=None,
    required: bool = True,
    by_hand: str | None = None,
) -> str | None:
    """Path of the first of ``filenames`` found for Hugging Face repo ``repo_id``.

    Looks in the local cache for every candidate first; downloads only if none is cached and
    offline mode is off. ``what`` describes the request for the error message, e.g.
    ``"open_clip:ViT-B-32 (pretrained 'laion2b_s34b_b79k')"``. With ``required=False``
    returns ``None`` instead of raising. ``by_hand`` replaces the default advice on passing
    the file as ``pretrained=``.
    """
    if isinstance(filenames, str):
        filenames = [filenames]
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        if not required:
            return None
        raise OfflineError(
            f"{what}: the weights live on the Hugging Face Hub ({repo_id}) but "
            "huggingface_hub is not installed; pip install huggingface_hub or pass "
            "--pretrained /path/to/the/file (pretrained= in Python)."
        ) from None
    kwargs = {"revision": revision, "cache_dir": cache_dir}
    for name in filenames:
        with contextlib.suppress(Exception):
            return hf_hub_download(repo_id, name, local_files_only=True, **kwargs)
    last: BaseException | None = None
    if not no_network():
        for name in filenames:
            try:
                return hf_hub_download(repo_id, name, **kwargs)
            except Exception as exc:  # noqa: BLE001 - summarised below
                last = exc
                # a repo that exists but lacks this file: try the next candidate
    if not required:
        return None
    tried = " or ".join(filenames)
    why = why_no_network() if no_network() else f"the download failed ({_short(last)})" if last else "it is not cached"
    by_hand = by_hand or (f"pass --pretrained /path/to/{filenames[0]} (pretrained= in Python; "
                          "or the folder holding it)")
    raise OfflineError(
        f"cannot get the files for {what}: looked for {tried} of Hugging Face repo "
        f"'{repo_id}' in the cache {hf_cache_dir(cache_dir)} and {why}. To supply them by hand, "
        f"download https://huggingface.co/{repo_id} on a machine with internet and either "
        f"{by_hand}, or copy a Hugging Face cache holding it here and point HF_HOME / "
        f"HF_HUB_CACHE at it (`hf download {repo_id}`)."
    )


def url_file(
    url: str,
    *,
    what: str,
    cache_dir,
    sha256_prefix: str | None = None,
    extra_dirs=(),
    timeout: float = 60.0,
) -> str:
    """A local copy of ``url``: found in ``cache_dir`` (or ``extra_dirs``) or downloaded there.

    The download goes to a temporary file that is checked against ``sha256_prefix`` (when
    known) and renamed into place only when complete and correct.
    """
    from .cache import file_sha256

    filename = os.path.basename(url.split("?")[0])
    dirs = list(dict.fromkeys([Path(cache_dir).expanduser()] + [Path(d).expanduser() for d in extra_dirs]))
    corrupt = []
    for d in dirs:
        candidate = d / filename
        if candidate.is_file():
            if not sha256_prefix or file_sha256(candidate).startswith(sha256_prefix):
                return str(candidate)
            corrupt.append(str(candidate))
    target = dirs[0] / filename
    looked = ", ".join(str(d) for d in dirs)
    if corrupt:
        looked += f" (found {', '.join(corrupt)}, but its SHA256 does not start with {sha256_prefix})"
    hint = (
        f"To supply it by hand, download {url} on a machine with internet and either pass "
        f"--pretrained /path/to/{filename} (pretrained= in Python) or put the file in {dirs[0]}."
    )
    if no_network(url):
        raise OfflineError(
            f"cannot get the weights for {what}: {filename} is not in {looked} and "
            f"{why_no_network(url)}. {hint}"
        )
    from .download import ChecksumError, DownloadFailed, fetch_url

    try:
        fetch_url(url, target, sha256=sha256_prefix, timeout=timeout, what=filename)
    except ChecksumError:
        raise InterpError(
            f"the download of {url} for {what} is corrupt (its SHA256 does not start with "
            f"{sha256_prefix[:12]}); nothing was written to {dirs[0]}."
        ) from None
    except DownloadFailed as exc:
        raise OfflineError(
            f"cannot get the weights for {what}: {filename} is not in {looked} and downloading "
            f"it failed ({exc.reason}). {hint}"
        ) from None
    return str(target)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def read_state_dict(path, *, what: str = "") -> dict:
    """Tensors of a checkpoint file: safetensors, torch pickles (weights only) or TorchScript.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers and a DataParallel
    ``module.`` prefix.
    """
    import torch

    path = Path(path)
    label = f" for {what}" if what else ""
    if not path.is_file():
        raise InterpError(f"checkpoint file{label} not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif _is_torchscript(path):
            scripted = torch.jit.load(str(path), map_location="cpu")
            state = dict(scripted.state_dict())
            for key in ("input_resolution", "context_length", "vocab_size"):
                state.pop(key, None)
        else:
            import warnings

            with warnings.catch_warnings():  # torch's protocol warnings: the error says it all
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        why = _short(exc)
        if "weights only" in why.lower() or "weights_only" in why:
            why = "it is a pickle holding Python objects, not only tensors; it was not run"
        elif len(why) < 8:
            why = f"not a checkpoint format: {why}"
        raise InterpError(
            f"{path} is not a readable checkpoint{label} ({why}); expected a "
            ".safetensors file or a torch state dict (.pt/.pth/.bin)."
        ) from None
    for container in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InterpError(f"{path} does not hold a state dict of tensors{label}.")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _listing(keys, limit: int = 6) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def state_dict_mismatch(model, state: dict, *, ignore_missing=(), ignore_unexpected=()) -> str | None:
    """A one-sentence description of how ``state`` disagrees with ``model`` (None if it fits)."""
    import fnmatch

    expected = model.state_dict()
    missing = [
        k for k in expected
        if k not in state and not any(fnmatch.fnmatch(k, p) for p in ignore_missing)
    ]
    unexpected = [
        k for k in state
        if k not in expected and not any(fnmatch.fnmatch(k, p) for p in ignore_unexpected)
    ]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} key(s) with a different shape (checkpoint vs model): {_listing(shapes)}")
    if missing:
        parts.append(f"{len(missing)} key(s) missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) in the checkpoint: {_listing(unexpected)}")
    return "; ".join(parts) or None


def load_checked(model, state: dict, *, what: str, source, ignore_missing=(), ignore_unexpected=()) -> None:
    """Load ``state`` into ``model`` (casting dtypes), or raise naming the mismatching keys."""
    problem = state_dict_mismatch(
        model, state, ignore_missing=ignore_missing, ignore_unexpected=ignore_unexpected
    )
    if problem:
        raise InterpError(
            f"the checkpoint {source} does not fit the architecture of {what}: {problem}."
        )
    expected = model.state_dict()
    cast = {}
    for k, v in state.items():
        if k in expected and v.is_floating_point() and v.dtype != expected[k].dtype:
            v = v.to(expected[k].dtype)
        if k in expected:
            cast[k] = v
    model.load_state_dict(cast, strict=False)
