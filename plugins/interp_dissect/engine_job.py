"""``interp dissect --engine ray`` (or ``--job-dir``): the probe set's pooled activations of the
target layer and the scoring CLIP's image embeddings as two sharded, resumable
:mod:`interpcore.engine` jobs; the concepts are then scored in this process from their arrays
(:meth:`DissectExplainer.explain_arrays`).

Job folders: ``--job-dir D`` gives ``D/activations`` and ``D/clip``; else ``OUT/job/...`` with
``--out``; else folders in the user cache named by each job's hash. Rerunning the command
resumes both (a finished job computes nothing). Imports torch only inside the functions.
"""

from __future__ import annotations


def _pooled(result, pool):
    from .dissect import pool_activations

    return {"activations": pool_activations(result["features"].detach().float().cpu(), pool)}


# the job's adapter is named by its import path, so one function per pooling
def pooled_mean(result, n: int) -> dict:
    return _pooled(result, "mean")


def pooled_max(result, n: int) -> dict:
    return _pooled(result, "max")


def pooled_cls(result, n: int) -> dict:
    return _pooled(result, "cls")


def pooled_auto(result, n: int) -> dict:
    return _pooled(result, "auto")


ADAPTERS = {"auto": pooled_auto, "mean": pooled_mean, "max": pooled_max, "cls": pooled_cls}


def job_specs(kw: dict, dataset: str, layer: str, clip: str, clip_pretrained=None):
    """The two jobs: the target's pooled ``layer`` activations, the CLIP's image embeddings."""
    from interpcore.engine import JobSpec, callable_path

    common = dict(dataset=dataset, split=kw.get("split", "test"), batch_size=int(kw["batch_size"]),
                  shard_size=int(kw["shard_size"]), limit=kw.get("limit"), fields=())
    target = JobSpec(backbone=kw["backbone"],
                     backbone_options={"pretrained": kw["pretrained"]} if kw.get("pretrained") else {},
                     call_options={"layer": layer}, adapter=callable_path(ADAPTERS[kw.get("pool", "auto")]),
                     **common)
    scorer = JobSpec(backbone=clip, backbone_options={"pretrained": clip_pretrained} if clip_pretrained else {},
                     call_options={"normalize": True}, **common)
    return target, scorer


def arrays(kw: dict, dataset: str, layer: str, clip: str, out=None, clip_pretrained=None):
    """``(activations (N, K), image embeddings (N, D), [JobResult, JobResult])`` from the jobs."""
    from interpcore.engine import engine_run_args, job_folder, run_job

    results = []
    for spec, name in zip(job_specs(kw, dataset, layer, clip, clip_pretrained), ("activations", "clip")):
        job_dir = f"{str(kw['job_dir']).rstrip('/')}/{name}" if kw.get("job_dir") else None
        results.append(run_job(spec, job_folder(spec, job_dir, out, f"job/{name}"),
                               **engine_run_args(kw, kw.get("device", "auto"))))
    return results[0].load("activations"), results[1].load("embedding"), results
