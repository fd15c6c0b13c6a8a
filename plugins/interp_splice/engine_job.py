"""SpLiCE's dataset decompositions as :mod:`interpcore.engine` jobs.

:func:`interp_splice.model.decompose_data` (behind ``decompose_dataset`` /
``decompose_classes``, the reference API and ``interp splice dataset|classes``) hands a
dataset here when it and the model can be named for workers: the job stores, per image, the
arrays of :meth:`SpliceModel.job_arrays` (weights, L0, cosine, the centred embedding and the
relative duality gap), and the averages are then read back from the job folder shard by
shard, through the same sums as the in-process path. Imports torch only inside the functions.
"""

from __future__ import annotations

import numpy as np

#: the per-image arrays a decomposition reads back
ARRAYS = ("weights", "l0", "cosine", "centred")


def job_spec(model, data, *, limit=None, batch_size: int = 64, shard_size: int = 256,
             plugins=()):
    """The job decomposing ``data`` with ``model``, or ``None`` when either cannot be named
    for a worker (see :func:`interpcore.engine.dataset_source` and ``SpliceModel.recipe``)."""
    from interpcore.engine import EngineError, JobSpec, backbone_source, dataset_source

    recipe = getattr(model, "recipe", None)
    source = dataset_source(data, getattr(data, "split", None) or "test")
    bsource = backbone_source(model.backbone) if model.backbone is not None else None
    if recipe is None or source is None or bsource is None:
        return None
    options = {**recipe, "l1_penalty": float(model.l1_penalty), "solver": model.solver}
    if model.solver_options:
        options["solver_options"] = dict(model.solver_options)
    # the solver's cost per image falls with the batch (one dictionary product a round for
    # all of them): each call gets up to a whole shard (at most SOLVE_BLOCK) while the
    # backbone still embeds ``batch_size`` images at a time (the model's own batch size)
    from .model import SOLVE_BLOCK

    solve_batch = max(int(batch_size), min(int(shard_size), SOLVE_BLOCK))
    try:
        return JobSpec(**source, **bsource, method="splice", verb="job_arrays",
                       method_options=options, batch_size=solve_batch,
                       shard_size=int(shard_size), limit=limit, fields=("label",),
                       plugins=tuple(plugins))
    except EngineError:  # options that are not JSON values: not nameable after all
        return None


def _has_labels(data) -> bool:
    try:
        sample = data[0]
    except (IndexError, KeyError, TypeError):
        return True  # an empty dataset says so later
    return isinstance(sample, dict) and sample.get("label") is not None


def decompose(model, spec, data, *, job_dir=None, engine: str = "local", overwrite: bool = False,
              target_label=None, by_class: bool = False, name=None, class_names=None, t0=None,
              **engine_options):
    """Run (or resume, or reuse) the job in ``job_dir`` (default: the user cache, named by
    the job's hash) and return its :class:`DatasetDecomposition`; the local engine uses
    ``model`` itself. ``result.job`` is the engine's :class:`JobResult`."""
    import time

    import torch

    from interpcore.engine import default_job_dir, iter_shards, run_job
    from interpcore.errors import InterpError

    from .model import _Sums

    t0 = time.perf_counter() if t0 is None else t0
    need_labels = by_class or target_label is not None
    if need_labels and not _has_labels(data):
        raise InterpError("per-class decomposition needs labels, but the dataset gives none")
    job_dir = job_dir if job_dir is not None else default_job_dir(spec)
    if engine == "local":  # this process: no second copy of the model
        engine_options = {**engine_options, "backbone": model.backbone, "method": model}
    job = run_job(spec, job_dir, engine=engine, overwrite=overwrite, **engine_options)
    if need_labels and "label" not in job.arrays:
        raise InterpError("per-class decomposition needs labels, but the dataset gives none")
    sums = _Sums(model, need_labels)
    c = model.dictionary.shape[0]
    gap = "relative_gap" in job.arrays
    names = list(ARRAYS) + (["relative_gap"] if gap else []) + (["label"] if need_labels else [])
    for part in iter_shards(job_dir, names, mmap=True):
        if part["weights"].shape[1] != c:
            raise InterpError(f"the job's weights have {part['weights'].shape[1]} concepts, "
                              f"the vocabulary {c}")
        keep = slice(None)
        labels = None
        if need_labels:
            labels = torch.from_numpy(np.asarray(part["label"]).astype(np.int64))
            if target_label is not None:
                keep = (labels == int(target_label)).numpy()
                labels = labels[torch.from_numpy(keep)]

        def take(key):
            return torch.from_numpy(np.array(part[key][keep], dtype=np.float64))

        g = take("relative_gap") if gap else None
        sums.add(take("weights"), take("l0"), take("cosine"), take("centred"), labels,
                 None if g is None else (float(g.max()) if g.numel() else 0.0))
    res = sums.result(name=name or spec.dataset, class_names=class_names,
                      target_label=target_label, t0=t0)
    res.job_dir, res.job = str(job_dir), job
    return res
