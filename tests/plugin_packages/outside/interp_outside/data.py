"""outside-shapes: a few dozen synthetic 32 x 32 images drawn with PIL (no torch).

Each sample is one coloured circle, square or triangle on a dark or light background, a
pure function of (seed, split, index). Samples carry ``label`` (the shape), ``mask`` (1 on
the object), ``caption`` and ``attributes`` (colour, shape, background). Besides the base
class's zero-shot task ``label`` the dataset offers ``color``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

import interpcore
from interpcore.zeroshot import ZeroShotTask, templates_from

from .words import BACKGROUNDS, COLORS, SHAPES

SIZE = 32
SPLITS = {"train": (0, 36), "val": (1, 12), "test": (2, 24)}       # split -> (stream, length)
RGB = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (40, 60, 230)}
BACKGROUND_RGB = {"dark": (35, 35, 40), "light": (215, 215, 205)}


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


class OutsideShapes(interpcore.Dataset):
    name = "outside-shapes"
    classes = list(SHAPES)

    def __init__(self, split: str = "test", *, n: int | None = None, limit: int | None = None,
                 seed: int = 0):
        if split not in SPLITS:
            raise interpcore.InterpError(
                f"outside-shapes has the splits {', '.join(SPLITS)}; got {split!r}.")
        stream, length = SPLITS[split]
        if n is not None:
            length = int(n)
        if limit is not None:
            length = min(length, int(limit))
        if length < 1:
            raise interpcore.InterpError(f"outside-shapes needs at least one sample; got {length}.")
        self.split, self.seed, self._stream, self._length = split, int(seed), stream, length
        # identifies the content for the image-mean cache (docs/vocabularies.md)
        self.cache_key = f"outside-shapes/{split}/seed{seed}/n{length}"

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict:
        index = self.check_index(index)
        rng = np.random.default_rng([self.seed, self._stream, index])
        shape = SHAPES[index % len(SHAPES)]
        color = COLORS[(index // len(SHAPES)) % len(COLORS)]
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        base = np.array(BACKGROUND_RGB[background], dtype=np.float32)
        pixels = np.clip(base + rng.normal(0, 8, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        mask = Image.new("L", (SIZE, SIZE), 0)
        cx, cy = rng.uniform(11, 21, 2)
        r = float(rng.uniform(6, 10))
        _draw(ImageDraw.Draw(image), shape, cx, cy, r, RGB[color])
        _draw(ImageDraw.Draw(mask), shape, cx, cy, r, 1)
        return {
            "image": image,
            "label": SHAPES.index(shape),
            "mask": np.asarray(mask, dtype=np.int64),
            "caption": f"a {color} {shape} on a {background} background",
            "attributes": {"color": color, "shape": shape, "background": background},
            "index": index,
        }

    def zeroshot_tasks(self, templates=None) -> dict:
        tasks = dict(super().zeroshot_tasks(templates=templates))
        tasks["color"] = ZeroShotTask("color", list(COLORS), list(COLORS),
                                      templates_from(templates), attribute="color")
        return tasks
