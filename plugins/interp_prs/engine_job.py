"""``interp prs decompose --engine ray`` (or ``--job-dir``) without images: the dataset
decomposition run as a sharded, resumable :mod:`interpcore.engine` job.

The job stores the same normalized contributions as :func:`interp_prs.decompose.
decompose_dataset` (``embedding``, ``embed``, ``attn``, ``attn_cls``, ``mlps``, ``ln_bias``,
``heads``, ``norm``, labels), one ``.npy`` per shard; :class:`JobContributions` reads them
back with the attribute names of a :class:`~interp_prs.decompose.PRSStore`, so the command's
summary code works on either.

Written by the engine helper; kept apart from the command bodies.
"""

from __future__ import annotations

from pathlib import Path


def job_spec(kw: dict, dataset_options: dict, *, per_patch: bool, layers):
    from interpcore.engine import JobSpec

    method_options = {"per_patch": bool(per_patch)}
    if layers is not None:
        method_options["layers"] = layers
    return JobSpec(
        dataset=kw["dataset"], split=kw.get("split", "test"), dataset_options=dict(dataset_options),
        backbone=kw["backbone"],
        backbone_options={"pretrained": kw["pretrained"]} if kw.get("pretrained") else {},
        method="prs", method_options=method_options, call_options={"normalize": True},
        batch_size=int(kw["batch_size"]), shard_size=int(kw["shard_size"]),
        limit=(int(kw["limit"]) if kw.get("limit") else None), fields=("label", "group"),
    )


class JobContributions:
    """A finished PRS job folder, read like a PRSStore (arrays as attributes)."""

    def __init__(self, path, result, layers):
        self.path = path if "://" in str(path) else Path(path)  # a folder or an fsspec URL
        self.result = result
        self._cache: dict = {}
        num_layers = result.arrays["attn"]["shape"][1]
        from .decompose import resolve_layers

        self.head_layers = resolve_layers(layers, num_layers)

    def __len__(self) -> int:
        return self.result.num_samples

    def __getattr__(self, name):
        if name.startswith("_") or name in ("path", "result", "head_layers"):
            raise AttributeError(name)
        if name not in self.result.arrays:
            raise AttributeError(f"the PRS job has no array '{name}'")
        if name not in self._cache:
            from interpcore.engine import load_array

            self._cache[name] = load_array(self.path, name)
        return self._cache[name]


def use_engine(kw: dict) -> bool:
    """True when the command was asked to run through the engine."""
    return (kw.get("engine") or "local") != "local" or bool(kw.get("job_dir"))


def decompose(kw: dict, *, per_patch: bool, layers):
    """Run (or resume) the job; return a :class:`JobContributions`."""
    from interpcore.engine import default_job_dir, engine_run_args, run_job

    opts = {"root": kw["root"]} if kw.get("root") else {}
    spec = job_spec(kw, opts, per_patch=per_patch, layers=layers)
    job_dir = kw.get("job_dir") or (Path(kw["out"]) / "job" if kw.get("out") else default_job_dir(spec))
    result = run_job(spec, job_dir, **engine_run_args(kw, kw.get("device", "auto")))
    return JobContributions(job_dir, result, layers)
