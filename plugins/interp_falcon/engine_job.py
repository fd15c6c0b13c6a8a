"""``interp falcon find-groups|explain``: the probe set's target-layer activations computed
as a sharded, resumable :mod:`interpcore.engine` job (``--engine local`` by default, ``ray``
with ``--address``/``--workers``), then used by FALCON exactly as
:func:`interp_falcon.steps.extract_features` would be.

Imports torch only inside the functions.
"""

from __future__ import annotations


def pooled_features(result, n: int) -> dict:
    """The job's adapter: a batch's layer output -> ``(n, F)`` feature vectors, pooled as
    FALCON pools them (spatial maps over H and W, token sequences over tokens)."""
    from .steps import pool_activations

    return {"features": pool_activations(result["features"].detach().float().cpu())}


def job_spec(kw: dict):
    from interpcore.engine import JobSpec, callable_path

    backbone_options = {"pretrained": kw["pretrained"]} if kw.get("pretrained") else {}
    return JobSpec(
        dataset=kw["dataset"], split=kw.get("split", "test"), backbone=kw["backbone"],
        backbone_options=backbone_options, call_options={"layer": kw.get("layer")},
        adapter=callable_path(pooled_features), batch_size=int(kw["batch_size"]),
        shard_size=int(kw["shard_size"]), limit=kw.get("limit"), fields=(),
    )


def features(kw: dict, out=None, backbone=None):
    """The probe features as a float32 ``(N, F)`` tensor from the command's engine job. The
    job folder is ``--job-dir``, else ``OUT/job``, else a folder in the user cache named by
    the job's hash; rerunning the command resumes it (a finished job computes nothing).
    ``backbone``: the command's target model, which the local engine uses instead of
    loading a second copy."""
    import torch

    from interpcore.engine import engine_run_args, job_folder, run_job

    spec = job_spec(kw)
    job_dir = job_folder(spec, kw.get("job_dir"), out)
    args = engine_run_args(kw, kw.get("device", "auto"))
    if args["engine"] == "local" and backbone is not None:
        args["backbone"] = backbone
    result = run_job(spec, job_dir, **args)
    return torch.from_numpy(result.load("features")).float()
