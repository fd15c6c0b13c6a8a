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
