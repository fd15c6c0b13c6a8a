"""From words to directions: concept dictionaries, text embeddings and image means.

Every method that reads a model in words needs texts embedded in the backbone's joint space:
SpLiCE's concept dictionary, TextSpan's text pool, FALCON's caption pool. This module is the
one path for that. It knows no backbone, vocabulary or dataset by name: it works with any
backbone that has the ``text_encoder`` (texts) or ``image_encoder`` (image mean) capability.

``concept_dictionary(backbone, vocabulary)``
    texts encoded in batches, L2-normalized, mean-centred over the dictionary and normalized
    again (SpLiCE's recipe); optional prompt templates, averaged when there are several.
``text_embeddings(backbone, vocabulary, center=False)``
    the same without centring (text pools, caption pools).
``image_mean(backbone, dataset)`` / ``image_mean(backbone, path=...)``
    the mean of L2-normalized image embeddings over a dataset (streamed in batches), or
    loaded from a tensor file (``.pt`` as SpLiCE publishes them, ``.safetensors``, ``.npy``).

Results are cached under ``cache_dir("concepts")`` and ``cache_dir("image_means")`` as
safetensors files, keyed by everything that changes them (backbone name and weights,
the encoder's dtype, the texts themselves, templates, centring; for image means the
dataset, split, size and limit). Entries are written atomically and validated when read: a
file that is truncated, corrupt or does not match what was asked for is ignored and
rebuilt.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .base import Capability, Vocabulary
from .errors import CapabilityError, InterpError

#: bumped whenever the cached computation changes, so that old entries are not reused
CACHE_VERSION = "1"

__all__ = ["concept_dictionary", "text_embeddings", "image_mean", "image_mean_job",
           "load_tensor_file", "normalize_templates"]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def normalize_templates(templates) -> list[str] | None:
    """``None``, one template or a list of templates -> a list (or None); each needs ``{}``."""
    if templates is None:
        return None
    if isinstance(templates, str):
        templates = [templates]
    templates = list(templates)
    if not templates:
        return None
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise InterpError(
                f"prompt template {t!r} must be a string with exactly one '{{}}' where the "
                "concept goes, e.g. 'a photo of {}'"
            )
    return templates


def _resolve_vocabulary(vocabulary, size=None) -> Vocabulary:
    """A Vocabulary from an object, a registered name, a file path or a list (cut to size)."""
    if isinstance(vocabulary, Vocabulary) and size is None:
        return vocabulary
    from .registry import get_registry

    return get_registry().get_vocabulary(vocabulary, size=size)


def _resolve_backbone(backbone):
    """A backbone object, or one loaded by registry name (``"shapes:clip-vit"``)."""
    if isinstance(backbone, str):
        from .registry import get_registry

        return get_registry().get_backbone(backbone)
    return backbone


def _require(backbone, capability: str, what: str) -> None:
    caps = getattr(backbone, "capabilities", None)
    if caps is not None and capability not in caps:
        raise CapabilityError(getattr(backbone, "name", "?"), capability, what)


def _backbone_key(backbone) -> list[str]:
    dtype = getattr(backbone, "dtype", None)
    return [backbone.cache_key, str(dtype)]


def _out_device(backbone, device):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device(getattr(backbone, "device", "cpu") or "cpu")


def _try_load(path: Path, check) -> object | None:
    """Load a cache entry if it exists and ``check(tensors, meta)`` accepts it, else None.

    A corrupt or mismatching entry is removed so that it is rebuilt.
    """
    if not path.is_file():
        return None
    from .cache import load_tensors

    try:
        tensors, meta = load_tensors(path)
        value = check(tensors, meta)
    except Exception:  # noqa: BLE001 - any unreadable entry is a miss
        value = None
    if value is None:
        try:
            path.unlink()
        except OSError:
            pass
    return value


def _try_save(path: Path, tensors: dict, meta: dict) -> None:
    from .cache import save_tensors

    try:
        save_tensors(path, tensors, meta)
    except OSError as exc:  # a read-only or full disk must not lose the computed result
        print(f"interp: warning: could not write cache entry {path}: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# texts
# --------------------------------------------------------------------------------------


def _encode_all(backbone, texts: Sequence[str], batch_size: int, desc: str):
    """Normalized embeddings of ``texts``, encoded ``batch_size`` at a time, float32 on CPU."""
    import torch

    from .progress import progress

    outs = []
    bar = progress(total=len(texts), desc=desc, unit="text")
    try:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            z = backbone.encode_text(chunk, normalize=True, batch_size=batch_size)
            z = torch.as_tensor(z).detach().float().cpu()
            if z.dim() != 2 or z.shape[0] != len(chunk):
                raise InterpError(
                    f"backbone '{backbone.name}' encode_text returned shape {tuple(z.shape)} "
                    f"for {len(chunk)} texts; expected ({len(chunk)}, embed_dim)"
                )
            outs.append(torch.nn.functional.normalize(z, dim=-1))
            bar.update(len(chunk))
    finally:
        bar.close()
    return torch.cat(outs)


def _compute_text_embeddings(backbone, concepts, templates, batch_size, center, desc):
    import torch

    if templates is None:
        z = _encode_all(backbone, concepts, batch_size, desc)
    else:
        total = None
        for i, t in enumerate(templates):
            label = desc if len(templates) == 1 else f"{desc} [{i + 1}/{len(templates)}]"
            zt = _encode_all(backbone, [t.format(c) for c in concepts], batch_size, label)
            total = zt if total is None else total + zt
        z = torch.nn.functional.normalize(total / len(templates), dim=-1)
    if center:
        z = z - z.mean(dim=0, keepdim=True)
        norms = z.norm(dim=-1)
        if bool((norms < 1e-6).any()):
            bad = [concepts[i] for i in (norms < 1e-6).nonzero().flatten().tolist()[:3]]
            raise InterpError(
                f"after mean-centring, concept(s) {bad} have a zero embedding (a dictionary "
                "needs at least two distinct concepts)"
            )
        z = z / norms[:, None]
    return z.contiguous()


def text_embeddings(
    backbone,
    vocabulary,
    *,
    templates=None,
    batch_size: int = 256,
    center: bool = False,
    cache: bool = True,
    device=None,
    size: int | None = None,
    desc: str | None = None,
):
    """L2-normalized text embeddings ``(c, d)`` of a vocabulary, cached on disk.

    ``backbone`` is a backbone object or a registry name such as ``"shapes:clip-vit"``.
    ``vocabulary`` is a :class:`~interpcore.Vocabulary`, a registered name (with ``size``),
    a path to a text file or a list of strings. With ``templates`` (one string or a list,
    each with one ``{}``) every concept is embedded in each template; the normalized
    embeddings are averaged over templates and normalized again. With ``center=True`` the
    rows are then mean-centred over the vocabulary and normalized again (see
    :func:`concept_dictionary`). The result is float32 on ``device`` (default: the
    backbone's device); row ``i`` belongs to ``vocabulary[i]``.
    """
    import torch

    backbone = _resolve_backbone(backbone)
    _require(backbone, Capability.TEXT_ENCODER, "text embeddings")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InterpError(f"batch_size must be a positive integer, got {batch_size!r}")
    vocab = _resolve_vocabulary(vocabulary, size)
    concepts = list(vocab.concepts)
    if not concepts:
        raise InterpError(f"vocabulary '{vocab.name}' is empty: nothing to embed")
    if center and len(concepts) < 2:
        raise InterpError(
            f"vocabulary '{vocab.name}' has one concept; a mean-centred dictionary needs two or more"
        )
    templates = normalize_templates(templates)
    out_device = _out_device(backbone, device)

    path = None
    if cache:
        from .cache import cache_dir, key_hash

        key = key_hash(
            "text-embeddings", CACHE_VERSION, *_backbone_key(backbone), vocab.content_hash,
            len(concepts), json.dumps(templates), bool(center),
        )
        path = cache_dir("concepts") / f"{key}.safetensors"
        dim = getattr(backbone, "embed_dim", None)

        def check(tensors, meta):
            z = tensors.get("embeddings")
            if z is None or z.dim() != 2 or z.shape[0] != len(concepts):
                return None
            if dim is not None and z.shape[1] != dim:
                return None
            if meta.get("content_hash") != vocab.content_hash or meta.get("key") != key:
                return None
            if not bool(torch.isfinite(z).all()):
                return None
            return z

        z = _try_load(path, check)
        if z is not None:
            return z.float().to(out_device)

    label = desc or f"encoding {vocab.name}"
    z = _compute_text_embeddings(backbone, concepts, templates, batch_size, center, label)
    if path is not None:
        meta = {
            "kind": "concept_dictionary" if center else "text_embeddings",
            "key": key,
            "backbone": getattr(backbone, "name", "?"),
            "pretrained": getattr(backbone, "pretrained", None),
            "vocabulary": vocab.name,
            "content_hash": vocab.content_hash,
            "count": len(concepts),
            "templates": json.dumps(templates),
            "center": bool(center),
            "version": CACHE_VERSION,
        }
        _try_save(path, {"embeddings": z}, meta)
    return z.to(out_device)


def concept_dictionary(
    backbone,
    vocabulary,
    *,
    templates=None,
    batch_size: int = 256,
    cache: bool = True,
    device=None,
    size: int | None = None,
):
    """SpLiCE's concept dictionary ``(c, d)`` for a backbone and a vocabulary.

    Each concept (optionally put into prompt ``templates``, averaged over several) is encoded
    with ``backbone.encode_text`` in batches of ``batch_size`` and L2-normalized; the rows
    are mean-centred over the dictionary (the column mean is subtracted) and L2-normalized
    again. So every row has unit norm, and before that last normalization every column had
    zero mean. Cached on disk (see the module docstring); ``cache=False`` recomputes and
    writes nothing. Returned as float32 on ``device`` (default: the backbone's device).
    """
    return text_embeddings(
        backbone, vocabulary, templates=templates, batch_size=batch_size, center=True,
        cache=cache, device=device, size=size,
    )


# --------------------------------------------------------------------------------------
# image means
# --------------------------------------------------------------------------------------


_MEAN_KEYS = ("image_mean", "mean", "embedding_mean")


def load_tensor_file(path, expected_dim: int | None = None, *, what: str = "image mean"):
    """A 1-D float32 tensor from ``.pt``/``.pth`` (loaded with ``weights_only=True``),
    ``.safetensors`` or ``.npy`` (no pickle), checked against ``expected_dim``.

    A file holding a dict must hold a single tensor or one under ``image_mean`` / ``mean``.
    Leading size-1 dimensions are squeezed (``(1, d)`` -> ``(d,)``).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InterpError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth", ".bin"):
            # SpLiCE's published means were saved from CUDA tensors: map them to the CPU.
            value = torch.load(str(path), map_location="cpu", weights_only=True)
        elif suffix == ".safetensors":
            from .cache import load_tensors

            value, _ = load_tensors(path)
        elif suffix == ".npy":
            import numpy as np

            value = torch.from_numpy(np.load(str(path), allow_pickle=False).copy())
        else:
            raise InterpError(
                f"cannot read {what} from '{path}': use a .pt, .pth, .safetensors or .npy file"
            )
    except InterpError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt file, pickle refused, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterpError(f"could not read {what} from '{path}': {first}") from None

    if isinstance(value, dict):
        tensors = {k: v for k, v in value.items() if isinstance(v, torch.Tensor)}
        named = [k for k in _MEAN_KEYS if k in tensors]
        if named:
            value = tensors[named[0]]
        elif len(tensors) == 1:
            value = next(iter(tensors.values()))
        else:
            raise InterpError(
                f"'{path}' holds {len(tensors)} tensors ({', '.join(sorted(tensors)[:5])}); "
                f"expected one tensor, or one named {' or '.join(_MEAN_KEYS[:2])}"
            )
    if not isinstance(value, torch.Tensor):
        raise InterpError(f"'{path}' does not hold a tensor (found {type(value).__name__})")
    t = value.detach().float().cpu()
    while t.dim() > 1 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise InterpError(f"{what} in '{path}' has shape {tuple(value.shape)}; expected (d,)")
    if expected_dim is not None and t.shape[0] != expected_dim:
        raise InterpError(
            f"{what} in '{path}' has {t.shape[0]} dimensions but the backbone's embeddings "
            f"have {expected_dim}: it was made for another model"
        )
    if not bool(torch.isfinite(t).all()):
        raise InterpError(f"{what} in '{path}' contains NaN or infinite values")
    return t.contiguous()


def _dataset_identity(dataset) -> list[str] | None:
    """What identifies a dataset's content for caching, or None if nothing does."""
    key = getattr(dataset, "cache_key", None)
    name = getattr(dataset, "name", "?")
    if key is None and (not name or name == "?"):
        return None
    return [str(key), str(name), str(getattr(dataset, "split", None)), str(len(dataset))]


def image_mean(
    backbone,
    dataset=None,
    *,
    path=None,
    limit: int | None = None,
    batch_size: int = 64,
    cache: bool = True,
    split: str | None = None,
    device=None,
    job_dir=None,
):
    """Mean of L2-normalized image embeddings ``(d,)``, as SpLiCE uses to centre images.

    Either streamed over ``dataset`` (an :class:`interpcore.Dataset` or a registered dataset
    name, with ``split``; the first ``limit`` samples when given) in batches of
    ``batch_size``, or read from ``path`` (a ``.pt``/``.safetensors``/``.npy`` tensor file,
    e.g. one of SpLiCE's published means). The mean itself is not renormalized.

    A dataset that can be reopened by name (a registered name, or a dataset from
    :func:`interpcore.get_dataset`) with a registered backbone is averaged as an embedding
    job of :mod:`interpcore.engine` (:func:`image_mean_job`) in ``job_dir`` (default: the
    user cache, named by the job's hash): resumable, and a finished job is read back (its
    ``means/embedding.npy``) without computing anything. Other datasets are streamed here
    and cached keyed by backbone, dataset name / ``cache_key``, split, length and limit; a
    dataset with neither a name nor a ``cache_key`` attribute is not cached. ``cache=False``
    computes in this process and writes nothing. Returned as float32 on ``device``
    (default: the backbone's device).
    """
    import numpy as np
    import torch

    backbone = _resolve_backbone(backbone)
    out_device = _out_device(backbone, device)
    dim = getattr(backbone, "embed_dim", None)
    if path is not None:
        if dataset is not None:
            raise InterpError("give image_mean a dataset or a path, not both")
        return load_tensor_file(path, dim).to(out_device)
    if dataset is None:
        raise InterpError(
            "image_mean needs a dataset (object or registered name) or path= to a tensor file"
        )
    _require(backbone, Capability.IMAGE_ENCODER, "image_mean")
    if isinstance(dataset, str):
        from .registry import get_registry

        dataset = get_registry().get_dataset(dataset, **({"split": split} if split else {}))
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InterpError(f"limit must be a positive integer, got {limit!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InterpError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise InterpError(f"dataset '{getattr(dataset, 'name', '?')}' is empty: no image mean")
    spec = image_mean_job(backbone, dataset, limit=limit, batch_size=batch_size) if cache else None
    if spec is not None:
        from .engine import default_job_dir, run_job

        job_dir = job_dir if job_dir is not None else default_job_dir(spec)
        mean = _finished_mean(spec, job_dir)
        if mean is None:
            mean = run_job(spec, job_dir, backbone=backbone).mean("embedding")
        mean = torch.from_numpy(np.asarray(mean, dtype=np.float32))
        if dim is not None and mean.shape[0] != dim:
            raise InterpError(f"backbone '{backbone.name}' gave {mean.shape[0]}-dim image "
                              f"embeddings but says embed_dim={dim}")
        return mean.contiguous().to(out_device)

    cache_path = None
    ident = _dataset_identity(dataset) if cache else None
    if ident is not None:
        from .cache import cache_dir, key_hash

        key = key_hash("image-mean", CACHE_VERSION, *_backbone_key(backbone), *ident, n)
        cache_path = cache_dir("image_means") / f"{key}.safetensors"

        def check(tensors, meta):
            m = tensors.get("image_mean")
            if m is None or m.dim() != 1 or meta.get("key") != key:
                return None
            if dim is not None and m.shape[0] != dim:
                return None
            return m if bool(torch.isfinite(m).all()) else None

        m = _try_load(cache_path, check)
        if m is not None:
            return m.float().to(out_device)

    from .data import batched_samples

    total = None
    count = 0
    desc = f"image mean ({getattr(dataset, 'name', 'dataset')})"
    for _, samples in batched_samples(dataset, batch_size, n, desc=desc):
        images = [s["image"] for s in samples]
        z = torch.as_tensor(backbone.encode_image(images, normalize=True, batch_size=batch_size))
        z = torch.nn.functional.normalize(z.detach().double().cpu(), dim=-1)
        total = z.sum(0) if total is None else total + z.sum(0)
        count += z.shape[0]
    mean = (total / count).float().contiguous()
    if dim is not None and mean.shape[0] != dim:
        raise InterpError(
            f"backbone '{backbone.name}' gave {mean.shape[0]}-dim image embeddings but says "
            f"embed_dim={dim}"
        )
    if cache_path is not None:
        meta = {
            "kind": "image_mean", "key": key, "backbone": getattr(backbone, "name", "?"),
            "pretrained": getattr(backbone, "pretrained", None),
            "dataset": getattr(dataset, "name", "?"), "split": getattr(dataset, "split", None),
            "count": count, "version": CACHE_VERSION,
        }
        _try_save(cache_path, {"image_mean": mean}, meta)
    return mean.to(out_device)


def image_mean_job(backbone, dataset, *, limit: int | None = None, batch_size: int = 64):
    """The :class:`~interpcore.engine.JobSpec` whose ``means/embedding.npy`` is
    :func:`image_mean` of ``dataset`` (the L2-normalized image embeddings of its first
    ``limit`` images), or ``None`` when the dataset or the backbone cannot be named for a job
    (see :func:`interpcore.engine.dataset_source`)."""
    from .engine import JobSpec, backbone_source, dataset_source

    source = dataset_source(dataset, getattr(dataset, "split", None) or "test")
    bsource = backbone_source(backbone)
    if source is None or bsource is None:
        return None
    return JobSpec(**source, **bsource, call_options={"normalize": True}, fields=(),
                   batch_size=batch_size, limit=limit)


def _finished_mean(spec, job_dir):
    """The mean embedding of a finished job of ``spec`` in ``job_dir``, read without running
    anything (no model, no rewrite: Ray workers that build a SpLiCE model all read the mean
    job their driver finished), or ``None``."""
    from .engine import EngineError, job_result, read_manifest

    try:
        manifest = read_manifest(job_dir)
        if manifest.get("status") != "complete" or manifest.get("spec_hash") != spec.hash:
            return None
        return job_result(job_dir).mean("embedding")
    except (EngineError, OSError, KeyError, ValueError):
        return None
