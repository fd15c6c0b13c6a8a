"""``interp falcon find-groups|explain --engine ray`` (or ``--job-dir``): the probe set's
target-layer activations computed as a sharded, resumable :mod:`interpcore.engine` job, then
used by FALCON exactly as :func:`interp_falcon.steps.extract_features` would be.

Imports torch only inside the functions.
"""

from __future__ import annotations

from pathlib import Path


def pooled_features(result, n: int) -> dict:
    """The job's adapter: a batch's layer output -> ``(n, F)`` feature vectors, pooled as
    FALCON pools them (spatial maps over H and W, token sequences over tokens)."""
    from .steps import pool_activations

    return {"features": pool_activations(result["features"].detach().float().cpu())}


def use_engine(kw: dict) -> bool:
    """True when the command was asked to run through the engine."""
    return (kw.get("engine") or "local") != "local" or bool(kw.get("job_dir"))


def job_spec(kw: dict):
    from interpcore.engine import JobSpec, callable_path

    backbone_options = {"pretrained": kw["pretrained"]} if kw.get("pretrained") else {}
    return JobSpec(
        dataset=kw["dataset"], split=kw.get("split", "test"), backbone=kw["backbone"],
        backbone_options=backbone_options, call_options={"layer": kw.get("layer")},
        adapter=callable_path(pooled_features), batch_size=int(kw["batch_size"]),
        shard_size=int(kw["shard_size"]), limit=kw.get("limit"), fields=(),
    )


def features(kw: dict, out=None):
    """The probe features as a float32 ``(N, F)`` tensor from an engine job, or ``None`` when
    the command runs in this process as before. The job folder is ``--job-dir``, else
    ``OUT/job``, else a folder in the user cache named by the job's hash; rerunning the
    command resumes it (a finished job computes nothing)."""
    if not use_engine(kw):
        return None
    import torch

    from interpcore.engine import default_job_dir, engine_run_args, run_job

    spec = job_spec(kw)
    if kw.get("job_dir"):
        job_dir = kw["job_dir"]
    elif out is not None:
        job_dir = Path(out) / "job"
    else:
        job_dir = default_job_dir(spec)
    result = run_job(spec, job_dir, **engine_run_args(kw, kw.get("device", "auto")))
    return torch.from_numpy(result.load("features")).float()
