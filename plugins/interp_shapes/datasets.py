"""The ``shapes`` and ``shapes-spurious`` datasets (numpy + PIL only, no torch)."""

from __future__ import annotations

from interpcore import Dataset, InterpError

from . import world

SPLITS = ("train", "val", "test")
DEFAULT_N = {"train": 100_000, "val": 2_000, "test": 2_000}

#: shapes-spurious: the binary label is one of two similar shapes; the background is
#: land-like or water-like. In the training split they agree with probability
#: ``SPURIOUS_AGREEMENT``; val / test are balanced over the four (label, background) groups.
SPURIOUS_CLASSES = ["circle", "hexagon"]
SPURIOUS_BACKGROUNDS = ["grass", "water"]  # "land" goes with circle, "water" with hexagon
SPURIOUS_AGREEMENT = 0.95
_SPURIOUS_STREAM_OFFSET = 1000  # keeps shapes-spurious images distinct from shapes images


class _WorldTasks:
    """Zero-shot tasks of the shapes world: one per attribute (``color``, ``shape``, ``size``,
    ``position``, ``background``, labels read from ``sample["attributes"]``) with the world's
    prompt templates and class phrases, plus ``label`` (the dataset's classes put into the
    shape templates)."""

    def zeroshot_tasks(self, templates=None) -> dict:
        from interpcore.zeroshot import ZeroShotTask, templates_from

        tasks = {}
        for attr, values in world.ATTRIBUTES.items():
            names = [world.ZEROSHOT_CLASSNAMES[attr][v] for v in values]
            tasks[attr] = ZeroShotTask(attr, list(values), names,
                                       templates_from(templates, world.ZEROSHOT_TEMPLATES[attr]),
                                       attribute=attr)
        if self.classes:
            names = [world.ZEROSHOT_CLASSNAMES["shape"].get(c, c) for c in self.classes]
            tasks["label"] = ZeroShotTask("label", list(self.classes), names,
                                          templates_from(templates, world.ZEROSHOT_TEMPLATES["shape"]))
        return tasks


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InterpError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    return split


def _check_n(n, split):
    n = DEFAULT_N[split] if n is None else int(n)
    if n < 0:
        raise InterpError(f"n must be >= 0, got {n}")
    return n


class ShapesDataset(_WorldTasks, Dataset):
    """Images of one or two coloured shapes on a textured background.

    Sample ``i`` depends only on ``(seed, split, i)``. ``label`` is the shape of the first
    object (index into :attr:`classes`); ``attributes`` has every attribute of every object.
    """

    name = "shapes"
    classes = list(world.SHAPES)
    #: What methods use with this dataset by default (see interpcore.DEFAULT_KEYS).
    defaults = {"zeroshot_task": "shape", "text_pool": "shapes-attributes"}

    def __init__(self, split: str = "test", n: int | None = None, seed: int = 0,
                 one_object_prob: float = 0.7, image_size: int = world.IMAGE_SIZE):
        self.split = _check_split(split)
        self.n = _check_n(n, split)
        self.seed = int(seed)
        if not 0.0 <= float(one_object_prob) <= 1.0:
            raise InterpError(f"one_object_prob must be in [0, 1], got {one_object_prob}")
        self.one_object_prob = float(one_object_prob)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> world.Scene:
        rng = world.sample_rng(self.seed, self.split, index)
        return world.random_scene(rng, self.one_object_prob)

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        rng = world.sample_rng(self.seed, self.split, index)
        scene = world.random_scene(rng, self.one_object_prob)
        s = world.make_sample(scene, rng, self.image_size)
        s["label"] = self.classes.index(scene.objects[0].shape)
        s["index"] = index
        return s

    def __repr__(self):
        return f"<ShapesDataset split={self.split} n={self.n} seed={self.seed}>"


class SpuriousShapesDataset(_WorldTasks, Dataset):
    """Waterbirds-like: label = circle (0) or hexagon (1), background = grass or water.

    ``group = 2 * label + background`` (background 0 = grass / land, 1 = water): groups 0
    and 3 are the majority groups of the training split. In the training split the
    background agrees with the label with probability ``agreement`` (0.95); val and test are
    exactly balanced (sample ``i`` is in group ``i % 4``). Training captions carry the
    correlation the way web captions do: they name the shape, and the background only
    sometimes.
    """

    name = "shapes-spurious"
    classes = list(SPURIOUS_CLASSES)
    defaults = {"zeroshot_task": "label", "text_pool": "shapes-attributes"}
    backgrounds = list(SPURIOUS_BACKGROUNDS)
    group_names = [f"{c} on {b}" for c in SPURIOUS_CLASSES for b in SPURIOUS_BACKGROUNDS]

    def __init__(self, split: str = "test", n: int | None = None, seed: int = 0,
                 agreement: float = SPURIOUS_AGREEMENT, image_size: int = world.IMAGE_SIZE):
        self.split = _check_split(split)
        self.n = _check_n(n, split)
        self.seed = int(seed)
        self.agreement = float(agreement)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        rng = world.sample_rng(self.seed, self.split, index, _SPURIOUS_STREAM_OFFSET)
        if self.split == "train":
            label = int(rng.integers(2))
            bg = label if rng.random() < self.agreement else 1 - label
        else:
            group = index % 4
            label, bg = group // 2, group % 2
        scene = world.random_scene(
            rng, one_object_prob=1.0, shapes=[self.classes[label]],
            backgrounds=[self.backgrounds[bg]])
        s = world.make_sample(scene, rng, self.image_size, p_background=0.3, shape_weight=0.9)
        s["label"] = label
        s["group"] = 2 * label + bg
        s["attributes"]["background_type"] = "land" if bg == 0 else "water"
        s["index"] = index
        return s

    def __repr__(self):
        return f"<SpuriousShapesDataset split={self.split} n={self.n} seed={self.seed}>"
