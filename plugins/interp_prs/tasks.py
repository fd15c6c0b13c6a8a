"""Zero-shot classification tasks on a dataset: class names, prompt templates, labels.

A dataset's own ``label`` / ``classes`` gives the task ``label`` with the OpenAI ImageNet
templates (or any templates given). Datasets of the synthetic shapes world also get one task
per attribute (``color``, ``shape``, ``size``, ``position``, ``background``) with the
prompt templates and class phrases of that world (read from the ``interp_shapes`` plugin
when it is installed; nothing here depends on it otherwise).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from interpcore import InterpError

SHAPES_DATASETS = ("shapes", "shapes-spurious")


@dataclasses.dataclass
class ZeroShotTask:
    """``classes``: canonical names; ``prompt_names``: the text put into the templates."""

    name: str
    classes: list
    prompt_names: list
    templates: list
    attribute: str | None = None  # shapes world: read the label from sample["attributes"]

    def labels(self, samples) -> np.ndarray:
        """Class index per sample (-1 where the sample has no label for this task)."""
        out = np.full(len(samples), -1, dtype=np.int64)
        for i, s in enumerate(samples):
            if self.attribute is None:
                lab = s.get("label")
                out[i] = -1 if lab is None else int(lab)
            else:
                v = (s.get("attributes") or {}).get(self.attribute)
                if v in self.classes:
                    out[i] = self.classes.index(v)
        return out


def _shapes_world():
    try:
        from interp_shapes import world
    except ImportError:
        raise InterpError("shapes-world tasks need the interp_shapes plugin") from None
    return world


def templates_from(spec, default=None) -> list:
    """Templates from 'openai', 'simple', a .txt file (one template with {} a line) or a list."""
    from interpcore.zeroshot import OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES

    if spec is None:
        return list(default) if default is not None else list(OPENAI_IMAGENET_TEMPLATES)
    if isinstance(spec, (list, tuple)):
        return list(spec)
    if spec == "openai":
        return list(OPENAI_IMAGENET_TEMPLATES)
    if spec == "simple":
        return list(SIMPLE_TEMPLATES)
    p = Path(spec)
    if p.is_file():
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        bad = [ln for ln in lines if "{}" not in ln]
        if not lines or bad:
            raise InterpError(f"{p}: every line must be a template with '{{}}' (bad: {bad[:1]})")
        return lines
    if "{}" in str(spec):
        return [str(spec)]
    raise InterpError(f"templates '{spec}': use openai, simple, a file of templates, or a "
                      "template with {}")


def dataset_tasks(dataset_name: str, classes=None, templates=None) -> dict[str, ZeroShotTask]:
    """The zero-shot tasks available on a dataset, by name."""
    tasks: dict[str, ZeroShotTask] = {}
    if dataset_name in SHAPES_DATASETS:
        world = _shapes_world()
        for attr, values in world.ATTRIBUTES.items():
            names = [world.ZEROSHOT_CLASSNAMES[attr][v] for v in values]
            tasks[attr] = ZeroShotTask(attr, list(values), names,
                                       templates_from(templates, world.ZEROSHOT_TEMPLATES[attr]),
                                       attribute=attr)
        if classes:
            names = [world.ZEROSHOT_CLASSNAMES["shape"].get(c, c) for c in classes]
            tasks["label"] = ZeroShotTask("label", list(classes), names,
                                          templates_from(templates, world.ZEROSHOT_TEMPLATES["shape"]))
        return tasks
    if classes:
        tasks["label"] = ZeroShotTask("label", list(classes), list(classes), templates_from(templates))
    return tasks


def get_task(store_meta: dict, name: str = "label", templates=None) -> ZeroShotTask:
    tasks = dataset_tasks(store_meta.get("dataset_name", "?"), store_meta.get("classes"), templates)
    if name not in tasks:
        have = ", ".join(tasks) or "none (the dataset has no class names)"
        raise InterpError(f"no zero-shot task '{name}' on dataset "
                          f"'{store_meta.get('dataset_name')}'; available: {have}")
    return tasks[name]


_WEIGHTS_CACHE: dict = {}


def task_weights(backbone, task: ZeroShotTask):
    """Zero-shot classifier weights (K, D) for a task, memoized per backbone."""
    from interpcore.zeroshot import classifier_weights

    key = (backbone.cache_key, id(backbone), tuple(task.prompt_names), tuple(map(str, task.templates)))
    if key not in _WEIGHTS_CACHE:
        _WEIGHTS_CACHE[key] = classifier_weights(backbone, task.prompt_names, task.templates)
    return _WEIGHTS_CACHE[key]
