"""The neuron commands' dataset work as sharded, resumable :mod:`interpcore.engine` jobs,
each running one of the lens's per-batch verbs in the workers:

* ``explain`` (with ``--engine ray`` or ``--job-dir``; ``find`` without ``--from``):
  ``batch_arrays``, the per-image second-order effects and activations; the statistics,
  principal directions and texts are then computed shard by shard in this process
  (:meth:`NeuronsExplainer.explain_job`). Per image ``layers x hidden x embed`` effects and
  ``layers x tokens x hidden`` activations in float32 (about 0.9 MB for the shapes CLIP's
  three layers).
* ``ablate``: ``ablation_arrays``, each image's representation before and after the ablation
  (the neurons and their means travel in the spec's call options, so a different result or
  neuron set is a different job); the accuracies are computed here from the two arrays.
* ``segment``: ``segment_arrays``, each image's zero-shot prediction and the patch maps of the
  neurons closest to its class and of the random ones; the maps are scored against the masks
  here.

The job folder is ``--job-dir``, else ``OUT/job`` with ``--out``, else a folder in the user
cache named by the job's hash; rerunning the command resumes it (a finished job computes no
shard). Imports torch only inside the functions.
"""

from __future__ import annotations


def job_spec(kw: dict, dataset: str, layers, verb: str = "batch_arrays", call_options=None):
    from interpcore.engine import JobSpec

    return JobSpec(dataset=dataset, split=kw.get("split", "test"), backbone=kw["backbone"],
                   backbone_options={"pretrained": kw["pretrained"]} if kw.get("pretrained") else {},
                   method="neurons", kind="explainer", verb=verb, call_options=dict(call_options or {}),
                   method_options={"layers": list(layers)}, batch_size=int(kw["batch_size"]),
                   shard_size=int(kw["shard_size"]), limit=kw.get("limit"), fields=())


def run(kw: dict, dataset: str, layers, out=None, verb: str = "batch_arrays", call_options=None, lens=None):
    """Run (or resume) the job; its :class:`interpcore.engine.JobResult`. ``lens``: the
    command's own explainer, which the local engine uses instead of loading a second model."""
    from interpcore.engine import engine_run_args, job_folder, run_job

    spec = job_spec(kw, dataset, layers, verb, call_options)
    args = engine_run_args(kw, kw.get("device", "auto"))
    if args["engine"] == "local" and lens is not None:
        args.update(backbone=lens.backbone, method=lens)
    return run_job(spec, job_folder(spec, kw.get("job_dir"), out), **args)
