"""Sharded dataset jobs: run a backbone (and a method) over a whole dataset, resumably.

A *job* is everything that determines its output, written down as names and options (a
:class:`JobSpec`): the dataset, the backbone, the method (a registered decomposer or
explainer, or none for plain embeddings), the batch and shard sizes. The dataset's indices
are cut into fixed shards; each shard is processed by one call of :class:`ShardWorker`::

    read the shard's samples -> backbone preprocessing -> method on each batch
    -> a dict of per-image numpy arrays -> one .npy file per (shard, array)

Workers build the backbone and method *from their names* through the registry, so a
third-party backbone or decomposer runs through exactly the same path as a built-in one,
in this process (engine ``local``) or in Ray workers (engine ``ray``, see
:mod:`interpcore.engine.ray`).

Output folder::

    OUT/manifest.json                  spec, spec hash, shard list, status, checksums, means
    OUT/arrays/<name>/shard-00007.npy  rows [7 * shard_size, ...) of array <name>
    OUT/tables/shard-00007.parquet     the same rows' per-image scalars and vectors (1-d, 2-d)
    OUT/records/shard-00007.json       written after the shard's arrays: proof it is done
    OUT/means/<name>.npy               mean over all images (also in the manifest if scalar)

Every file is written atomically (temporary file + rename). A rerun with the same spec skips
the shards whose record and files check out (resume); a different spec refuses to write into
the folder. Averages are computed from the per-image arrays, never from batch means, so they
do not depend on how the images were batched or sharded.

From a method result to arrays (the *array protocol*), first match wins:

1. ``spec.adapter`` (``"module:function"``), called as ``function(result, n)``;
2. the result's ``to_arrays()`` method;
3. a mapping, a dataclass or a plain tensor / array: every value whose first dimension is
   the batch size becomes an array (tensors are moved to the CPU; ``None`` and batch-level
   scalars are dropped).

The package's modules: :mod:`.spec` (the job), :mod:`.sources` (reading samples),
:mod:`.worker` (computing a shard), :mod:`.store` (the output folder and its readers),
:mod:`.engines` (engines and :func:`run_job`), :mod:`.ray` (the Ray engine),
:mod:`.options` (click options) and :mod:`.cli` (``interp job``). None imports torch or
numpy at import time, so command-line modules can use :func:`engine_options` without
slowing ``interp --help`` down.
"""

from .engines import ENGINES, LocalEngine, get_engine, run_job
from .options import engine_options, engine_requested, engine_run_args
from .sources import (IMAGE_SUFFIXES, ImageFolderSource, WebDatasetSource, bind_dataset,
                      ensure_plugins, num_samples, open_dataset, read_samples)
from .spec import (FORMAT_VERSION, INPUTS, EngineError, JobSpec, Shard, backbone_source,
                   callable_path, dataset_source, import_object, make_shards)
from .store import (MANIFEST, JobArray, JobResult, JobStore, _runner, default_job_dir,
                    iter_shards, job_folder, job_result, live_status, load_array, load_columns,
                    load_table, read_manifest, run_section)
from .worker import ShardWorker, to_arrays

__all__ = [
    "ENGINES", "FORMAT_VERSION", "IMAGE_SUFFIXES", "INPUTS", "MANIFEST", "EngineError",
    "ImageFolderSource", "JobArray", "JobResult", "JobSpec", "JobStore", "LocalEngine", "Shard",
    "ShardWorker", "WebDatasetSource", "backbone_source", "bind_dataset", "callable_path",
    "dataset_source", "default_job_dir", "engine_options", "engine_requested", "engine_run_args", "ensure_plugins",
    "get_engine", "import_object", "iter_shards", "job_folder", "job_result", "live_status",
    "load_array", "load_columns", "load_table", "make_shards", "num_samples", "open_dataset",
    "read_manifest", "read_samples", "run_job", "run_section", "to_arrays",
]
