"""Finding, fetching and reading model weights, with one clear message when they are missing.

Weights are downloaded by the model libraries' own functions (huggingface_hub's
``hf_hub_download``, open_clip's ``download_pretrained``, timm's ``load_pretrained``,
torchvision's ``get_state_dict``); backbone plugins call them through these helpers so that
every library behaves the same way offline:

* :func:`hub_file` looks in the Hugging Face cache first (no network), then downloads unless
  offline mode is on, and on failure raises ONE :class:`~interpcore.errors.OfflineError`
  naming the model, the tag, where it looked, and how to supply the file by hand.
* :func:`library_download` runs a library's download call: offline (or with the host out of
  reach) the Hub is switched to its own offline mode for the call and a URL the library would
  fetch is not asked for unless already cached; the library's network and absence errors
  become that one message, a checksum failure an :class:`~interpcore.errors.InterpError`.
* :func:`read_state_dict` reads ``.safetensors``, ``.pt`` / ``.pth`` / ``.bin`` (tensors only,
  ``weights_only=True``) and TorchScript archives (OpenAI's CLIP files), with a message
  naming the file when it is not a checkpoint.
* :func:`load_checked` loads a state dict into a model and, when keys or shapes disagree,
  says which keys mismatch instead of printing torch's wall of text.

Offline mode and the reachability probe are :mod:`interpcore.download`'s (one switch for data
files and weights). Only the functions that need torch import it.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path

from . import download as net
from .errors import InterpError, OfflineError


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
    if not net.no_network():
        for name in filenames:
            try:
                return hf_hub_download(repo_id, name, **kwargs)
            except Exception as exc:  # noqa: BLE001 - summarised below
                last = exc
                # a repo that exists but lacks this file: try the next candidate
    if not required:
        return None
    tried = " or ".join(filenames)
    why = net.why_no_network() if net.no_network() else f"the download failed ({_short(last)})" if last else "it is not cached"
    by_hand = by_hand or (f"pass --pretrained /path/to/{filenames[0]} (pretrained= in Python; "
                          "or the folder holding it)")
    raise OfflineError(
        f"cannot get the files for {what}: looked for {tried} of Hugging Face repo "
        f"'{repo_id}' in the cache {hf_cache_dir(cache_dir)} and {why}. To supply them by hand, "
        f"download https://huggingface.co/{repo_id} on a machine with internet and either "
        f"{by_hand}, or copy a Hugging Face cache holding it here and point HF_HOME / "
        f"HF_HUB_CACHE at it (`hf download {repo_id}`)."
    )


@contextlib.contextmanager
def _hub_offline(on: bool):
    """huggingface_hub's own offline mode for the duration of a call (it reads its constant at
    call time; the environment variable only when it is imported)."""
    if not on:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        yield
        return
    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def _network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a file could not be fetched or is absent:
    OS and socket errors (urllib's, torch.hub's, FileNotFoundError from a cache lookup) and
    the HTTP libraries' and huggingface_hub's errors."""
    seen = 0
    while exc is not None and seen < 8:
        mod = type(exc).__module__.split(".")[0]
        if isinstance(exc, OSError) or mod in ("huggingface_hub", "requests", "httpx", "urllib3"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _checksum_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("sha256" in text or "hash" in text)


def library_download(fetch, *, what: str, url: str | None = None, url_dir=None,
                     hub_repo: str | None = None, cache_dir=None, filename: str | None = None):
    """``fetch()`` (a model library's own download call), offline-aware, its errors one line.

    ``url``/``url_dir``: the URL the library would download and the folder it keeps it in;
    ``hub_repo``: the Hugging Face repo it would ask (its cache: ``cache_dir`` or the HF
    default). They only make the message: what it names as looked at and how to supply the
    file (``filename``, default the URL's). Offline (or with the host out of reach) the Hub
    answers from its cache only, and a URL download whose file is not in ``url_dir`` is
    refused before the library is called.
    """
    filename = filename or (os.path.basename(url.split("?")[0]) if url else "checkpoint.safetensors")
    looked = []
    if hub_repo:
        looked.append(f"Hugging Face repo '{hub_repo}' in the cache {hf_cache_dir(cache_dir)}")
    if url and url_dir:
        looked.append(f"{filename} in {url_dir}")
    probe = net.hub_url() if hub_repo else url
    blocked = net.no_network(probe)

    def fail(why: str) -> OfflineError:
        sources = " or ".join(x for x in (f"{net.hub_url()}/{hub_repo}" if hub_repo else "", url or "") if x)
        fill = []
        if url and url_dir:
            fill.append(f"put the file in {url_dir}")
        if hub_repo:
            fill.append(f"copy a Hugging Face cache holding it here and point HF_HOME / HF_HUB_CACHE "
                        f"at it (`hf download {hub_repo}`)")
        return OfflineError(
            f"cannot get the weights for {what}: looked for {' and '.join(looked) or filename} and "
            f"{why}. To supply them by hand, download {sources} on a machine with internet and "
            f"either pass --pretrained /path/to/{filename} (pretrained= in Python)"
            + "".join(f", or {f}" for f in fill) + "."
        )

    if blocked and not hub_repo and url and not (url_dir and (Path(url_dir) / filename).is_file()):
        raise fail(net.why_no_network(probe))
    try:
        with _hub_offline(blocked):
            return fetch()
    except OfflineError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted below; other errors go up unchanged
        if _checksum_error(exc):
            raise InterpError(
                f"the download of {url or hub_repo} for {what} is corrupt ({_short(exc)}); "
                "delete the partial file and try again, or pass --pretrained a checked file."
            ) from None
        if not _network_error(exc):
            raise
        raise fail(net.why_no_network(probe) if blocked else f"the download failed ({_short(exc)})") from None


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
