"""Zero-shot classification tasks on a dataset: class names, prompt templates, labels.

The tasks are the dataset's own (:meth:`interpcore.Dataset.zeroshot_tasks`): every dataset
with class names offers ``label`` (OpenAI's ImageNet templates, or any templates given);
datasets with more labels per sample add their own tasks. A PRS store records the name and
classes of the dataset it was built from; :func:`store_dataset` gets that dataset back from
the registry to ask for its tasks and defaults.
"""

from __future__ import annotations

from interpcore import Dataset, InterpError
from interpcore.zeroshot import ZeroShotTask, templates_from

__all__ = ["ZeroShotTask", "dataset_tasks", "default_task", "get_task", "store_dataset",
           "task_weights", "templates_from"]


class _Recorded(Dataset):
    """Stands in for a dataset the registry cannot give back: only its recorded classes."""

    def __init__(self, name, classes):
        self.name = str(name)
        self.classes = list(classes or []) or None


def store_dataset(meta: dict, split: str | None = None) -> Dataset:
    """The dataset a store (or any ``{"dataset_name", "classes"}`` record) was built from:
    the registered dataset of that name, else a stand-in that offers the recorded classes."""
    import interpcore

    name = meta.get("dataset_name") or "?"
    try:
        return interpcore.get_dataset(name, split=split or meta.get("split") or "test")
    except (InterpError, OSError):  # not registered, or needs a root it was not given
        return _Recorded(name, meta.get("classes"))


def _as_dataset(dataset, classes=None) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    return store_dataset({"dataset_name": dataset, "classes": classes})


def dataset_tasks(dataset, classes=None, templates=None) -> dict[str, ZeroShotTask]:
    """The zero-shot tasks available on a dataset (a Dataset or a name), by name."""
    return _as_dataset(dataset, classes).zeroshot_tasks(templates)


def get_task(store_meta: dict, name: str = "label", templates=None) -> ZeroShotTask:
    """One task of the dataset a store was built from."""
    return store_dataset(store_meta).zeroshot_task(name, templates)


def default_task(dataset, allow_none: bool = False):
    """The task a method uses when none is named: the dataset's advertised
    ``defaults["zeroshot_task"]``, else ``label`` when it has class names; without either,
    ``False`` (``allow_none``) or an error."""
    tasks = dataset.zeroshot_tasks()
    name = (dataset.defaults or {}).get("zeroshot_task")
    if name in tasks:
        return name
    if "label" in tasks:
        return "label"
    if allow_none:
        return False
    raise InterpError(f"dataset '{dataset.name}' has no class names for a zero-shot task")


_WEIGHTS_CACHE: dict = {}


def task_weights(backbone, task: ZeroShotTask):
    """Zero-shot classifier weights (K, D) for a task, memoized per backbone."""
    from interpcore.zeroshot import classifier_weights

    key = (backbone.cache_key, id(backbone), tuple(task.prompt_names), tuple(map(str, task.templates)))
    if key not in _WEIGHTS_CACHE:
        _WEIGHTS_CACHE[key] = classifier_weights(backbone, task.prompt_names, task.templates)
    return _WEIGHTS_CACHE[key]
