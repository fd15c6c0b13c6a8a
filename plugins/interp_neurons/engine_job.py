"""``interp neurons explain --engine ray`` (or ``--job-dir``): the probe set's per-image
second-order effects and activations as a sharded, resumable :mod:`interpcore.engine` job
(the lens's ``batch_arrays`` on each batch, in the workers), then the statistics, principal
directions and texts computed shard by shard in this process
(:meth:`NeuronsExplainer.explain_job`).

Per image the job stores ``layers x hidden x embed`` effects and ``layers x tokens x hidden``
activations in float32 (about 0.9 MB for the shapes CLIP's three layers). The job folder is
``--job-dir``, else ``OUT/job`` with ``--out``, else a folder in the user cache named by the
job's hash; rerunning the command resumes it. Imports torch only inside the functions.
"""

from __future__ import annotations


def use_engine(kw: dict) -> bool:
    """True when the command was asked to run through the engine."""
    return (kw.get("engine") or "local") != "local" or bool(kw.get("job_dir"))


def job_spec(kw: dict, dataset: str, layers):
    from interpcore.engine import JobSpec

    return JobSpec(dataset=dataset, split=kw.get("split", "test"), backbone=kw["backbone"],
                   backbone_options={"pretrained": kw["pretrained"]} if kw.get("pretrained") else {},
                   method="neurons", kind="explainer", verb="batch_arrays",
                   method_options={"layers": list(layers)}, batch_size=int(kw["batch_size"]),
                   shard_size=int(kw["shard_size"]), limit=kw.get("limit"), fields=())


def run(kw: dict, dataset: str, layers, out=None):
    """Run (or resume) the job; its :class:`interpcore.engine.JobResult`."""
    from interpcore.engine import engine_run_args, job_folder, run_job

    spec = job_spec(kw, dataset, layers)
    return run_job(spec, job_folder(spec, kw.get("job_dir"), out), **engine_run_args(kw, kw.get("device", "auto")))
