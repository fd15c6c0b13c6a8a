"""``interp splice dataset|classes --engine ray`` (or ``--job-dir``): the decomposition run as
a sharded, resumable :mod:`interpcore.engine` job, then summarised exactly like the
single-process path (:func:`interp_splice.model.decompose_data`).

Written by the engine helper; kept apart from the command bodies so the two stay easy to
read. Imports torch only inside the functions.
"""

from __future__ import annotations

from pathlib import Path


def job_spec(kw: dict, dataset: str, dataset_options: dict):
    """The engine job for the command's options (every option that changes the output)."""
    from interpcore.engine import JobSpec

    method_options = {
        "vocabulary": kw.get("vocabulary"),
        "vocabulary_size": kw.get("vocabulary_size") or None,
        "l1_penalty": kw.get("l1_penalty"),
        "solver": kw.get("solver"),
        "templates": kw.get("templates"),
        "image_mean": str(Path(kw["image_mean"]).resolve()) if kw.get("image_mean") else None,
        "mean_dataset": kw.get("mean_dataset"),
    }
    backbone_options = {"pretrained": kw["pretrained"]} if kw.get("pretrained") else {}
    return JobSpec(
        dataset=dataset, split=kw.get("split", "test"), dataset_options=dict(dataset_options),
        backbone=kw["backbone"], backbone_options=backbone_options, method="splice",
        method_options={k: v for k, v in method_options.items() if v is not None},
        batch_size=int(kw["batch_size"]), shard_size=int(kw["shard_size"]), limit=kw.get("limit"),
        fields=("label",),
    )


def dataset_options(kw: dict, key: str) -> dict:
    """The dataset options the command's own loader used (``--root``, or a folder given as
    the dataset name)."""
    if kw.get("root"):
        return {"root": kw["root"]}
    if key != kw["dataset"] and Path(kw["dataset"]).is_dir():
        return {"root": kw["dataset"]}
    return {}


def use_engine(kw: dict) -> bool:
    """True when the command was asked to run through the engine."""
    return (kw.get("engine") or "local") != "local" or bool(kw.get("job_dir"))


def decompose(kw: dict, key: str, data, *, target_label=None, by_class: bool = False,
              name: str | None = None, suffix: str = ""):
    """Run the job (or resume it) and return a :class:`DatasetDecomposition`.

    The job folder is ``--job-dir`` (+ ``suffix``), else ``OUT/job`` (+ ``suffix``), else a
    folder in the user cache named by the job's hash; rerunning the command resumes it.
    """
    import time

    import numpy as np
    import torch

    from interpcore.engine import (default_job_dir, engine_run_args, iter_shards, run_job)
    from interpcore.errors import InterpError

    from .model import DatasetDecomposition, _load_vocabulary, default_vocabulary

    t0 = time.perf_counter()
    spec = job_spec(kw, key, dataset_options(kw, key))
    if kw.get("job_dir"):
        job_dir = str(kw["job_dir"]) + suffix  # a folder or an fsspec URL
    elif kw.get("out"):
        job_dir = Path(kw["out"]) / f"job{suffix}"
    else:
        job_dir = default_job_dir(spec)
    result = run_job(spec, job_dir, **engine_run_args(kw, kw.get("device", "auto")))
    vocab = _load_vocabulary(kw.get("vocabulary") or default_vocabulary(kw["backbone"]),
                             kw.get("vocabulary_size") or None)
    concepts = list(vocab.concepts)
    class_names = getattr(data, "classes", None)
    if isinstance(target_label, str):
        if not class_names or target_label not in class_names:
            raise InterpError(f"class '{target_label}' is not a class of this dataset")
        target_label = list(class_names).index(target_label)
    need_labels = by_class or target_label is not None
    if need_labels and "label" not in result.arrays:
        raise InterpError("per-class decomposition needs labels, but the dataset gives none")

    c = len(concepts)
    total = np.zeros(c)
    l0_sum = cos_sum = 0.0
    count = 0
    cls: dict = {}
    names = ["weights", "l0", "cosine"] + (["label"] if need_labels else [])
    for part in iter_shards(job_dir, names, mmap=True):
        w = np.asarray(part["weights"], dtype=np.float64)
        if w.shape[1] != c:
            raise InterpError(f"the job's weights have {w.shape[1]} concepts, the vocabulary {c}")
        l0 = (w > 0).sum(1).astype(np.float64)  # as decompose_data counts it
        cos = np.asarray(part["cosine"], dtype=np.float64)
        if need_labels:
            labels = np.asarray(part["label"])
            if target_label is not None:
                keep = labels == int(target_label)
                w, l0, cos, labels = w[keep], l0[keep], cos[keep], labels[keep]
        total += w.sum(0)
        l0_sum += float(l0.sum())
        cos_sum += float(cos.sum())
        count += w.shape[0]
        if need_labels:
            for lab in np.unique(labels).tolist():
                m = labels == lab
                acc = cls.setdefault(int(lab), [np.zeros(c), 0, 0.0, 0.0])
                acc[0] += w[m].sum(0)
                acc[1] += int(m.sum())
                acc[2] += float(l0[m].sum())
                acc[3] += float(cos[m].sum())
    if count == 0:
        raise InterpError("no images to decompose")
    labs = sorted(cls)
    return DatasetDecomposition(
        dataset=name or key, concepts=concepts,
        mean_weights=torch.from_numpy(total / count).float(), mean_l0=l0_sum / count,
        mean_cosine=cos_sum / count, count=count,
        class_weights={k: torch.from_numpy(cls[k][0] / cls[k][1]).float() for k in labs},
        class_counts={k: cls[k][1] for k in labs},
        class_names={k: (class_names[k] if class_names and 0 <= k < len(class_names) else str(k))
                     for k in labs},
        class_l0={k: cls[k][2] / cls[k][1] for k in labs},
        class_cosine={k: cls[k][3] / cls[k][1] for k in labs},
        l1_penalty=float(kw.get("l1_penalty", 0.25)), backbone=kw["backbone"],
        vocabulary=vocab.name, seconds=time.perf_counter() - t0,
    )
