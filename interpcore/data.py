"""Helpers for streaming datasets through a backbone in batches."""

from __future__ import annotations

from collections.abc import Iterator

from .progress import progress


def batched_samples(dataset, batch_size: int = 64, limit: int | None = None,
                    desc: str = "images") -> Iterator[tuple[list[int], list[dict]]]:
    """Yield ``(indices, samples)`` batches from a map-style dataset, with a progress bar."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    bar = progress(total=n, desc=desc, unit="img")
    try:
        for start in range(0, n, batch_size):
            idx = list(range(start, min(start + batch_size, n)))
            samples = [dataset[i] for i in idx]
            yield idx, samples
            bar.update(len(idx))
    finally:
        bar.close()


def batched_pixels(dataset, backbone, batch_size: int = 64, limit: int | None = None,
                   desc: str = "images"):
    """Yield ``(pixels, samples)``: preprocessed image batches on the backbone's device."""
    for _, samples in batched_samples(dataset, batch_size, limit, desc):
        yield backbone.to_pixels([s["image"] for s in samples]), samples


def probe_images(inputs, backbone=None, limit: int | None = None, *, split: str = "test"):
    """``(dataset or None, images)`` for a method's probe inputs: a dataset name or object
    (its first ``limit`` images), ``None`` (the dataset ``backbone`` advertises), one image
    (a path, PIL image or pixel tensor) or a list of images. A string that is not an
    existing file is taken as a dataset name."""
    from pathlib import Path

    from .base import Dataset, default_for
    from .errors import InterpError

    if inputs is None or isinstance(inputs, str) and not Path(inputs).is_file():
        name = inputs or default_for("dataset", backbone)
        if name is None:
            what = f"'{backbone.name}'" if backbone is not None else "the backbone"
            raise InterpError(f"no probe dataset given and {what} advertises none; pass a "
                              "dataset name or images")
        from . import get_dataset

        inputs = get_dataset(name, split=split)
    if isinstance(inputs, Dataset):
        n = len(inputs) if limit is None else min(int(limit), len(inputs))
        return inputs, [inputs[i]["image"] for i in range(n)]
    if isinstance(inputs, (str, Path)) or hasattr(inputs, "shape") and len(inputs.shape) == 3 \
            or not hasattr(inputs, "__len__"):
        inputs = [inputs]
    images = list(inputs)
    return None, images if limit is None else images[: int(limit)]
