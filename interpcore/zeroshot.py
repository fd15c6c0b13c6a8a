"""Zero-shot classification with a vision-language backbone.

A zero-shot classifier is one unit vector per class: the class name is put into prompt
templates, the templates are encoded by the text tower and normalized, averaged, and the
mean is normalized again (the recipe of the CLIP paper). Images are classified by the
largest dot product between their normalized embedding and those vectors.

This module knows no model by name; it only uses the :class:`~interpcore.base.Backbone`
interface (``encode_text``). torch is imported inside the functions so that importing
:mod:`interpcore` stays light.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .errors import InterpError

#: The 80 prompt templates OpenAI used for zero-shot ImageNet (CLIP paper, prompt
#: engineering notebook); each is a format string with one ``{}`` for the class name.
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: A single neutral template, for quick runs and small synthetic worlds.
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


@dataclasses.dataclass
class ZeroShotTask:
    """A zero-shot classification task a dataset offers (see :meth:`Dataset.zeroshot_tasks`).

    ``classes`` are the canonical class values, ``prompt_names`` the text put into the
    ``templates`` for each of them. Labels come from ``sample["label"]`` or, when
    ``attribute`` is set, from ``sample["attributes"][attribute]`` (matched against
    ``classes``).
    """

    name: str
    classes: list
    prompt_names: list
    templates: list
    attribute: str | None = None

    def labels(self, samples) -> "np.ndarray":
        """Class index per sample (-1 where the sample has no label for this task)."""
        import numpy as np

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


def templates_from(spec, default=None) -> list:
    """Templates from 'openai', 'simple', a .txt file (one template with {} a line), one
    template string with {}, or a list; ``None`` gives ``default`` (else OpenAI's 80)."""
    from pathlib import Path

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


def fill_templates(classname: str, templates: Sequence[str]) -> list[str]:
    """The prompts for one class: each template with ``{}`` replaced by the class name.

    A template may also be a callable ``f(classname) -> str`` (open_clip's style).
    """
    out = []
    for t in templates:
        if callable(t):
            out.append(str(t(classname)))
        elif isinstance(t, str) and "{}" in t:
            out.append(t.replace("{}", classname))
        else:
            raise InterpError(
                f"prompt template {t!r} has no '{{}}' placeholder for the class name"
            )
    return out


def classifier_weights(
    backbone,
    classnames: Sequence[str],
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    progress: bool = False,
):
    """Zero-shot classifier weights, a ``(K, d)`` float32 tensor of unit rows.

    For each of the ``K`` class names, every template is filled in and encoded with
    ``backbone.encode_text``; the normalized text embeddings are averaged and the mean is
    normalized again. ``templates=None`` uses :data:`OPENAI_IMAGENET_TEMPLATES`. Texts are
    encoded in batches of ``batch_size`` across classes.
    """
    import torch

    classnames = [str(c) for c in classnames]
    if not classnames:
        raise InterpError("zero-shot classifier needs at least one class name")
    templates = OPENAI_IMAGENET_TEMPLATES if templates is None else tuple(templates)
    if isinstance(templates, str):  # a lone string would be split into characters
        templates = (templates,)
    if not templates:
        raise InterpError("zero-shot classifier needs at least one prompt template")
    prompts: list[str] = []
    for c in classnames:
        prompts.extend(fill_templates(c, templates))
    chunks = range(0, len(prompts), batch_size)
    if progress:
        from .progress import progress as bar

        chunks = bar(chunks, desc="encoding prompts", unit="batch")
    embs = []
    with torch.no_grad():
        for start in chunks:
            z = backbone.encode_text(prompts[start : start + batch_size], batch_size=batch_size)
            embs.append(torch.nn.functional.normalize(z.float(), dim=-1))
    z = torch.cat(embs).reshape(len(classnames), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(z, dim=-1).cpu()


def logits(image_embeddings, weights, *, normalize: bool = True):
    """Class scores ``(N, K)``: (normalized) image embeddings times classifier weights."""
    import torch

    z = torch.as_tensor(image_embeddings).float()
    w = torch.as_tensor(weights).float().to(z.device)
    if z.shape[-1] != w.shape[-1]:
        raise InterpError(
            f"image embeddings have size {z.shape[-1]} but the classifier expects {w.shape[-1]}"
        )
    if normalize:
        z = torch.nn.functional.normalize(z, dim=-1)
    return z @ w.T


def predict(image_embeddings, weights, *, normalize: bool = True):
    """Predicted class indices ``(N,)`` for image embeddings."""
    return logits(image_embeddings, weights, normalize=normalize).argmax(dim=-1)


def accuracy(image_embeddings, weights, labels, *, topk: int = 1, normalize: bool = True) -> float:
    """Top-``k`` accuracy (a fraction in [0, 1]) of a zero-shot classifier.

    ``image_embeddings``: ``(N, d)``; ``weights``: ``(K, d)`` from
    :func:`classifier_weights`; ``labels``: ``(N,)`` class indices.
    """
    import torch

    scores = logits(image_embeddings, weights, normalize=normalize)
    labels = torch.as_tensor(labels, device=scores.device).long().reshape(-1)
    if labels.shape[0] != scores.shape[0]:
        raise InterpError(
            f"got {scores.shape[0]} embeddings but {labels.shape[0]} labels"
        )
    if scores.shape[0] == 0:
        raise InterpError("accuracy of an empty set of images is undefined")
    k = min(int(topk), scores.shape[1])
    top = scores.topk(k, dim=-1).indices
    return float((top == labels[:, None]).any(dim=-1).float().mean())


__all__ = [
    "OPENAI_IMAGENET_TEMPLATES",
    "SIMPLE_TEMPLATES",
    "accuracy",
    "classifier_weights",
    "fill_templates",
    "logits",
    "predict",
]
