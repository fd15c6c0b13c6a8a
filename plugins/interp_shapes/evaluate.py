"""Quality of the shapes-world models on held-out images.

* CLIP zero-shot accuracy per attribute (colour, shape, size, position, background) on
  single-object images of a held-out split, with a classifier made by averaging normalized
  text embeddings over a few templates per class (:func:`interpcore.zeroshot.classifier_weights`).
* CLIP zero-shot label accuracy per group and worst-group accuracy on the balanced
  ``shapes-spurious`` test split.
* ResNet multi-label accuracy (every colour and shape present predicted, nothing else).

The functions take registered backbones (``interpcore.get_backbone("shapes:clip-vit")``, or the
backbone being trained by :mod:`interp_shapes.train`): images go in through the backbone's own
preprocessing, so nothing here knows the models' normalization.
"""

from __future__ import annotations

import numpy as np
import torch

from interpcore.progress import progress

from . import world
from .datasets import ShapesDataset, SpuriousShapesDataset

ATTRIBUTE_ORDER = ("color", "shape", "size", "position", "background")
#: Acceptance thresholds (issue 4).
THRESHOLDS = {"color": 0.95, "shape": 0.90, "position": 0.85, "size": 0.85, "resnet": 0.95}
SPURIOUS_TEMPLATES = ["a photo of a {}", "a {}", "an image of a {}"]


def _arrays(dataset, n, desc):
    imgs, samples = [], []
    for i in progress(range(n), desc=desc, unit="img"):
        s = dataset[i]
        imgs.append(s["image"])
        samples.append(s)
    return imgs, samples


def _encode_images(model, images, batch_size=256):
    return model.encode_image(images, normalize=True, batch_size=batch_size).float().cpu()


def classifier(model, attribute: str):
    from interpcore.zeroshot import classifier_weights

    names = [world.ZEROSHOT_CLASSNAMES[attribute][v] for v in world.ATTRIBUTES[attribute]]
    return classifier_weights(model, names, world.ZEROSHOT_TEMPLATES[attribute])


def clip_attribute_accuracy(model, n: int = 1000, seed: int = 0, split: str = "test") -> dict:
    """Zero-shot accuracy per attribute on ``n`` single-object images."""
    ds = ShapesDataset(split, n=n, seed=seed, one_object_prob=1.0)
    images, samples = _arrays(ds, n, f"shapes {split} images")
    z = _encode_images(model, images)
    out = {}
    for attr in ATTRIBUTE_ORDER:
        w = classifier(model, attr)
        values = list(world.ATTRIBUTES[attr])
        labels = torch.tensor([values.index(s["attributes"][attr]) for s in samples])
        pred = (z @ w.T).argmax(-1)
        out[attr] = float((pred == labels).float().mean())
    return out


def clip_spurious_accuracy(model, n: int = 1000, seed: int = 0, split: str = "test") -> dict:
    """Zero-shot circle-vs-hexagon accuracy per (label, background) group on shapes-spurious."""
    from interpcore.zeroshot import classifier_weights

    ds = SpuriousShapesDataset(split, n=n, seed=seed)
    images, samples = _arrays(ds, n, f"shapes-spurious {split} images")
    z = _encode_images(model, images)
    w = classifier_weights(model, ds.classes, SPURIOUS_TEMPLATES)
    pred = (z @ w.T).argmax(-1).numpy()
    labels = np.array([s["label"] for s in samples])
    groups = np.array([s["group"] for s in samples])
    per_group = {}
    for g, name in enumerate(ds.group_names):
        sel = groups == g
        per_group[name] = float((pred[sel] == labels[sel]).mean()) if sel.any() else float("nan")
    return {
        "per_group": per_group,
        "worst_group": float(min(per_group.values())),
        "average": float((pred == labels).mean()),
    }


def resnet_targets(samples) -> torch.Tensor:
    colors, shapes = list(world.COLORS), list(world.SHAPES)
    y = torch.zeros(len(samples), len(colors) + len(shapes))
    for i, s in enumerate(samples):
        for o in s["attributes"]["objects"]:
            y[i, colors.index(o["color"])] = 1
            y[i, len(colors) + shapes.index(o["shape"])] = 1
    return y


@torch.no_grad()
def resnet_accuracy(backbone, n: int = 1000, seed: int = 0, split: str = "test") -> dict:
    """Exact-match accuracy (all colours and shapes present, nothing else) and per-label
    accuracy of the multi-label ResNet backbone (``logits(images)``) on ``n`` images with one
    or two objects."""
    ds = ShapesDataset(split, n=n, seed=seed)
    images, samples = _arrays(ds, n, f"shapes {split} images")
    y = resnet_targets(samples)
    pred = (backbone.logits(images, batch_size=256) > 0).float()
    exact = (pred == y).all(dim=1).float().mean()
    single = torch.tensor([len(s["attributes"]["objects"]) == 1 for s in samples])
    return {
        "exact_match": float(exact),
        "exact_match_single_object": float((pred[single] == y[single]).all(dim=1).float().mean()),
        "per_label": float((pred == y).float().mean()),
    }
