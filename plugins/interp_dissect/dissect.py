"""CLIP-Dissect (Oikarinen and Weng, "CLIP-Dissect: Automatic Description of Neuron
Representations in Deep Vision Networks", ICLR 2023).

For a layer of a vision model (the *target*) and a probe set of images ``D``:

* ``A`` ``(N, K)``: each neuron's activation on each image (a channel's map or a token
  sequence averaged to one number per image, as the paper does for convolutional channels);
* ``P`` ``(N, M)``: a CLIP's cosine similarity between each image and each concept of a
  vocabulary;
* a similarity function scores every (neuron, concept) pair from the neuron's column of ``A``
  and the concept's column of ``P``; the neuron's label is the best-scoring concept.

Similarity functions (``similarity=``):

* ``soft_wpmi`` (the paper's default): ``P`` is turned into ``p(concept | image)`` by a softmax
  over concepts (temperature ``1 / alpha``); each of the neuron's ``top_k`` most activating
  images is taken into its example set with a probability falling linearly from ``p_start``
  to ``p_end`` along the ranking; ``log p(c | E) = sum_i log(1 + p_i (p(c | x_i) - 1))``,
  ``log p(c)`` is the log of its mean over all neurons of the layer, and the score is
  ``log p(c | E) - lam * log p(c)``;
* ``wpmi``: the hard version, every top image in the example set:
  ``log p(c | B) = sum_{top_k} log p(c | x)``, the same prior over the layer's neurons;
* ``cos``: the cosine between the neuron's column of ``A`` and the concept's column of ``P``
  over all images, as they are (the authors' ``cos_similarity``);
* ``cos_cubed``: the same after centring both columns and cubing them elementwise, which
  weighs the images far from the mean (the authors' ``cos_similarity_cubed``);
* ``rank_reorder``: over the neuron's top ``top_fraction`` (5%) images, with ``q`` their
  activations in order and ``q'`` the same values put in the order of the concept's
  similarities on them, ``-mean |q - q'|^p / baseline / mean_sim^scale_p``: ``baseline`` is
  ``mean |q - q_perm|^p`` over permutations of the values, ``mean_sim`` the concept's mean
  similarity on those images (the authors' ``rank_reorder``, ``p=3, scale_p=0.5``);
* ``rank_reorder_all`` (interpcore's variant): ``-|| q - q' ||_p / std(q)`` over *all* probe
  images, with no division by the concept's similarity.

Everything here uses the public contract only: ``forward_features`` / ``features`` of the
target, ``encode_image`` / ``encode_text`` of the CLIP, and the registry.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

import interpcore
from interpcore import Capability, Explainer, InterpError, Result
from interpcore.data import probe_images

from .choices import POOLS, SIMILARITIES

#: The paper's settings of each similarity function (its code's defaults).
PAPER_SETTINGS = {
    "soft_wpmi": {"top_k": 100, "alpha": 10.0, "lam": 1.0, "p_start": 0.998, "p_end": 0.97},
    "wpmi": {"top_k": 28, "alpha": 2.0, "lam": 0.6},
    "cos": {},
    "cos_cubed": {},
    "rank_reorder": {"p": 3.0, "top_fraction": 0.05, "scale_p": 0.5},
    "rank_reorder_all": {"p": 3.0},
}


#: added to the probabilities inside the logs of (soft-)WPMI, as the authors' code does
MIN_PROB = 1e-7

# -- similarity functions ----------------------------------------------------------------


def _unit_columns(x: torch.Tensor, min_norm: float = 0.0) -> torch.Tensor:
    return x / x.norm(dim=0, keepdim=True).clamp_min(max(min_norm, 1e-30))


def soft_wpmi(acts, sims, *, top_k=100, alpha=10.0, lam=1.0, p_start=0.998, p_end=0.97):
    """Scores ``(K, M)`` from activations ``(N, K)`` and image-concept cosines ``(N, M)``."""
    n = acts.shape[0]
    k = min(int(top_k), n)
    probs = torch.softmax(alpha * sims, dim=1)  # p(concept | image)
    top = acts.topk(k, dim=0).indices  # (k, K)
    keep = (p_start - torch.arange(k, dtype=probs.dtype) / k * (p_start - p_end)).unsqueeze(1)
    # log p(c | E) for every neuron: the top images' probabilities, each kept with prob keep_i
    log_given = torch.stack([torch.log1p(keep * (probs[top[:, j]] - 1) + MIN_PROB).sum(0)
                             for j in range(acts.shape[1])])  # (K, M)
    return _minus_prior(log_given, lam)


def _minus_prior(log_given, lam):
    """``log p(c | E_k) - lam * log p(c)`` with ``p(c)`` the mean of ``p(c | E_k)`` over the
    layer's neurons ``k`` (in logs, so products of a hundred probabilities do not underflow)."""
    log_prior = torch.logsumexp(log_given, dim=0, keepdim=True) - math.log(log_given.shape[0])
    return log_given - lam * log_prior


def wpmi(acts, sims, *, top_k=28, alpha=2.0, lam=0.6):
    k = min(int(top_k), acts.shape[0])
    probs = torch.softmax(alpha * sims, dim=1)
    top = acts.topk(k, dim=0).indices  # (k, K)
    log_given = torch.log(probs[top] + MIN_PROB).sum(0)  # (K, M): every top image shows the concept
    return _minus_prior(log_given, lam)


def cos(acts, sims):
    return _unit_columns(acts).T @ _unit_columns(sims)


def cos_cubed(acts, sims):
    # the authors' code floors the cubed columns' norms at 1e-3
    a, s = ((x - x.mean(0, keepdim=True)) ** 3 for x in (acts, sims))
    return _unit_columns(a, 1e-3).T @ _unit_columns(s, 1e-3)


def rank_reorder(acts, sims, *, p=3.0, top_fraction=0.05, scale_p=0.5):
    n = acts.shape[0]
    k = min(n, max(2, int(n * top_fraction)))  # the authors' int(n * fraction), at least a pair
    q, top = acts.topk(k, dim=0)  # (k, K), each column descending
    ascending = q.flip(0)
    out = torch.empty(acts.shape[1], sims.shape[1], dtype=acts.dtype)
    for j in range(acts.shape[1]):
        # the baseline is the expectation over uniformly random permutations of the values
        # (the authors' code draws five): the mean over all pairs (i, i') of |q_i - q_i'|^p
        baseline = ((q[:, j:j + 1] - q[None, :, j]).abs() ** p).mean().clamp_min(1e-30)
        s = sims[top[:, j]]  # (k, M): the concepts' similarities on the neuron's top images
        rank = s.argsort(0).argsort(0)  # rank of each top image under each concept, ascending
        err = ((q[:, j:j + 1] - ascending[:, j][rank]).abs() ** p).mean(0) / baseline
        # a concept's mean cosine on the top images is raised to a floor: the authors' code
        # takes its square root and would give NaN for a negative mean
        out[j] = -err / s.mean(0).clamp_min(1e-6) ** scale_p
    return out


def rank_reorder_all(acts, sims, *, p=3.0):
    # q'[image ranked r by the concept] = the r-th smallest activation of the neuron
    rank = sims.argsort(0).argsort(0)  # (N, M): rank of each image under each concept
    ordered = acts.sort(0).values  # (N, K)
    scale = acts.std(0).clamp_min(1e-12)  # neurons on one scale, so scores compare across them
    out = torch.empty(acts.shape[1], sims.shape[1], dtype=acts.dtype)
    for j in range(acts.shape[1]):
        q_prime = ordered[:, j][rank]  # (N, M)
        out[j] = -((acts[:, j:j + 1] - q_prime).abs() ** p).sum(0) ** (1 / p) / scale[j]
    return out


FUNCTIONS = {"soft_wpmi": soft_wpmi, "wpmi": wpmi, "cos": cos, "cos_cubed": cos_cubed, "rank_reorder": rank_reorder,
             "rank_reorder_all": rank_reorder_all}


def function_settings(similarity: str, **overrides) -> dict:
    """The settings ``similarity`` runs with: the paper's, with the ``overrides`` that are not
    ``None``; one that the function does not take is an error, not ignored."""
    if similarity not in FUNCTIONS:
        raise InterpError(f"unknown similarity '{similarity}'; choose one of {', '.join(SIMILARITIES)}")
    kw = dict(PAPER_SETTINGS[similarity])
    given = {k: v for k, v in overrides.items() if v is not None}
    foreign = [k for k in given if k not in kw]
    if foreign:
        takes = ", ".join(kw) or "no settings"
        raise InterpError(f"{foreign[0]} does not apply to similarity '{similarity}' (it takes {takes})")
    kw.update(given)
    return kw


def similarity_scores(acts, sims, similarity: str = "soft_wpmi", **settings) -> torch.Tensor:
    """``(K, M)`` scores of a similarity function (the paper's settings unless overridden)."""
    kw = function_settings(similarity, **settings)
    return FUNCTIONS[similarity](torch.as_tensor(acts, dtype=torch.float64),
                                 torch.as_tensor(sims, dtype=torch.float64), **kw).float()


def pool_activations(act: torch.Tensor, pool: str = "auto") -> torch.Tensor:
    """One number per neuron and image: ``(N, C, H, W)`` maps and ``(N, T, C)`` tokens
    averaged (``mean``), maximised (``max``) or, for tokens, the first (class) token (``cls``).
    ``auto`` is what the authors' code does: the mean of a map, the class token of tokens."""
    if act.dim() == 2:
        return act
    if act.dim() == 4:
        if pool == "cls":
            raise InterpError("pool='cls' needs a token layer; this layer gives (N, C, H, W) maps")
        flat = act.flatten(2)  # (N, C, HW)
        return flat.amax(2) if pool == "max" else flat.mean(2)  # auto: the mean, as mean
    if act.dim() == 3:
        if pool in ("cls", "auto"):
            return act[:, 0]
        return act.mean(1) if pool == "mean" else act.amax(1)
    raise InterpError(f"cannot pool activations of shape {tuple(act.shape)}")


# -- the result --------------------------------------------------------------------------


@dataclasses.dataclass
class DissectResult(Result):
    """Concept labels of a layer's neurons. ``scores[k, m]``: similarity of neuron
    ``neurons[k]`` and concept ``concepts[m]``; ``labels[k]`` its best concept."""

    backbone: str
    layer: str
    clip: str
    vocabulary: str
    similarity: str
    n_images: int
    neurons: list
    labels: list
    concepts: list
    scores: np.ndarray  # (K, M)
    activations: np.ndarray | None = None  # (N, K) pooled activations on the probe images
    settings: dict | None = None  # the similarity function's settings (None: saved before they were kept)

    def top(self, k: int, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` best concepts of the ``k``-th neuron with their scores."""
        row = np.asarray(self.scores[k])
        order = np.argsort(-row, kind="stable")[:n]
        return [(self.concepts[i], float(row[i])) for i in order]

    def neurons_for(self, concept: str) -> list[int]:
        """The neurons labelled with ``concept``."""
        return [int(n) for n, lab in zip(self.neurons, self.labels) if lab == concept]

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lab in self.labels:
            counts[lab] = counts.get(lab, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def __str__(self) -> str:
        lines = [f"CLIP-Dissect of {self.backbone} layer {self.layer} ({len(self.neurons)} neurons, "
                 f"{self.n_images} probe images; concepts: {self.vocabulary} through {self.clip}, "
                 f"{self.similarity})"]
        for k, n in enumerate(self.neurons[:40]):
            alts = ", ".join(c for c, _ in self.top(k, 4)[1:])
            lines.append(f"  neuron {n:>4}: {self.labels[k]:<24} (then {alts})")
        if len(self.neurons) > 40:
            lines.append(f"  ... {len(self.neurons) - 40} more (--json for all)")
        counts = self.label_counts()
        lines.append("  most frequent labels: " + ", ".join(f"{c} x{n}" for c, n in list(counts.items())[:8]))
        return "\n".join(lines)

    def figure(self, n: int = 20):
        """The most frequent labels of the layer, as bars."""
        from interpcore.figures import bar_chart

        counts = self.label_counts()
        items = list(counts.items())[:n]
        return bar_chart([c for c, _ in items], [v for _, v in items], sort=False, value_format="{:.0f}",
                         title=f"CLIP-Dissect labels of {self.backbone} {self.layer} ({self.similarity})",
                         xlabel="neurons")


# -- the method --------------------------------------------------------------------------


def _resolve(backbone):
    return interpcore.get_backbone(backbone) if isinstance(backbone, str) else backbone


class DissectExplainer(Explainer):
    """CLIP-Dissect on one layer of ``backbone`` (any model with feature maps).

    ``clip``: the vision-language backbone that scores images against concepts (default: the
    target itself when it has image and text encoders, else the ``captioner`` the target
    advertises, else the installed default vision-language backbone); ``vocabulary``: concept vocabulary name, list or file
    (default: the dataset's or CLIP's advertised ``vocabulary``); ``layer``: a feature layer
    (default: the backbone's ``default_layer``); ``similarity``: one of :data:`SIMILARITIES`;
    ``pool``: ``auto`` (the mean of a map, the class token of a token layer, as the authors'
    code does), ``mean``, ``max`` or ``cls`` (token layers); ``top_k`` / ``alpha`` / ``lam``:
    override the paper's settings of the similarity function.
    """

    name = "dissect"
    requires = (Capability.FEATURE_MAPS,)

    def __init__(self, backbone, *, clip=None, vocabulary=None, layer=None, similarity="soft_wpmi",
                 pool="auto", batch_size=64, top_k=None, alpha=None, lam=None):
        settings = function_settings(similarity, top_k=top_k, alpha=alpha, lam=lam)  # checked before any work
        if pool not in POOLS:
            raise InterpError(f"unknown pool '{pool}'; choose one of {', '.join(POOLS)}")
        if int(batch_size) < 1:
            raise InterpError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(backbone, clip=clip, vocabulary=vocabulary, layer=layer, similarity=similarity,
                         pool=pool, batch_size=batch_size, top_k=top_k, alpha=alpha, lam=lam)
        self.layer = layer or backbone.default_layer
        if self.layer is None:
            raise InterpError(f"backbone '{backbone.name}' has no default feature layer; give layer=")
        self.similarity, self.pool, self.batch_size = similarity, pool, int(batch_size)
        self.settings = settings  # the function's, the paper's where not overridden
        self._clip, self._vocabulary = clip, vocabulary

    # -- parts ---------------------------------------------------------------------------
    def clip_name(self):
        """The name of the CLIP that scores the concepts, or ``None`` when it is the target."""
        if self._clip is not None:
            return self._clip if isinstance(self._clip, str) else self._clip.name
        if self.backbone.has(Capability.TEXT_ENCODER) and self.backbone.has(Capability.IMAGE_ENCODER):
            return None
        # the vision-language partner the target's family advertises, else the default one
        return interpcore.default_for("captioner", self.backbone) or interpcore.default_backbone("vision-language")

    def clip_backbone(self):
        name = self.clip_name()
        if name is None:
            clip = self.backbone
        elif self._clip is not None and not isinstance(self._clip, str):
            clip = self._clip
        else:
            clip = interpcore.get_backbone(name, device=str(self.backbone.device))
        for cap in (Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER):
            if not clip.has(cap):
                raise InterpError(f"CLIP-Dissect scores concepts with a vision-language backbone; "
                                  f"'{clip.name}' has no {cap}")
        return clip

    def vocabulary(self, dataset=None, clip=None):
        v = self._vocabulary
        if v is None:
            v = interpcore.default_for("vocabulary", dataset, clip, self.backbone, fallback="laion")
        return v if isinstance(v, interpcore.Vocabulary) else interpcore.get_vocabulary(v)

    def activations(self, images) -> torch.Tensor:
        """``(N, K)`` pooled activations of the layer on ``images`` (any ``to_pixels`` input)."""
        outs = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.backbone.to_pixels(images[start:start + self.batch_size])
            with torch.no_grad():
                act = self.backbone.forward_features(pixels, self.layer).detach()
            outs.append(pool_activations(act, self.pool).float().cpu())
        return torch.cat(outs)

    def concept_similarities(self, images, clip, concepts) -> torch.Tensor:
        """``(N, M)`` cosine similarity of each image and each concept in ``clip``'s space."""
        text = clip.encode_text(list(concepts), normalize=True).float().cpu()
        img = clip.encode_image(images, normalize=True, batch_size=self.batch_size).float().cpu()
        return img @ text.T

    # -- the verb ------------------------------------------------------------------------
    def explain(self, inputs=None, *, limit=None, neurons=None, keep_activations=True) -> DissectResult:
        """Label the layer's neurons from a probe set: a dataset (name or object; default the
        backbone's advertised ``dataset``) or a list of images. ``limit``: first images of a
        dataset; ``neurons``: indices to label (default all)."""
        dataset, images = probe_images(inputs, self.backbone, limit)
        if len(images) < 2:
            raise InterpError(f"CLIP-Dissect needs at least 2 probe images, got {len(images)}")
        clip = self.clip_backbone()
        vocab = self.vocabulary(dataset, clip)
        acts = self.activations(images)
        if acts.dim() != 2:
            raise InterpError(f"layer '{self.layer}' gives activations of shape {tuple(acts.shape)}")
        picked = self._picked(neurons, acts.shape[1])
        sims = self.concept_similarities(images, clip, vocab.concepts)
        return self._label(acts, sims, clip, vocab, len(images), picked, keep_activations)

    def explain_arrays(self, activations, image_embeddings, *, dataset=None, neurons=None,
                       keep_activations=True) -> DissectResult:
        """Label the neurons from arrays computed elsewhere (a dataset job of the engine):
        ``activations`` ``(N, K)`` pooled activations of the layer, ``image_embeddings``
        ``(N, D)`` the scoring CLIP's image embeddings of the same images."""
        acts = torch.as_tensor(np.asarray(activations), dtype=torch.float32)
        img = torch.nn.functional.normalize(torch.as_tensor(np.asarray(image_embeddings), dtype=torch.float32), dim=-1)
        if acts.dim() != 2 or img.dim() != 2 or acts.shape[0] != img.shape[0] or acts.shape[0] < 2:
            raise InterpError(f"activations {tuple(acts.shape)} and image embeddings {tuple(img.shape)} must be "
                              "(images, neurons) and (images, dim) for the same 2 or more images")
        clip = self.clip_backbone()
        vocab = self.vocabulary(dataset, clip)
        picked = self._picked(neurons, acts.shape[1])
        sims = img @ clip.encode_text(list(vocab.concepts), normalize=True).float().cpu().T
        return self._label(acts, sims, clip, vocab, acts.shape[0], picked, keep_activations)

    def _picked(self, neurons, width):
        picked = list(range(width)) if neurons is None else [int(n) for n in neurons]
        bad = [n for n in picked if not 0 <= n < width]
        if bad:
            raise InterpError(f"neuron {bad[0]} out of range: layer '{self.layer}' has {width}")
        return picked

    def _label(self, acts, sims, clip, vocab, n_images, picked, keep_activations):
        # the prior of soft-WPMI is over all the layer's neurons, so score them all, then pick
        scores = similarity_scores(acts, sims, self.similarity, **self.settings)[picked]
        best = scores.argmax(1).tolist()
        return DissectResult(
            backbone=self.backbone.name, layer=self.layer, clip=clip.name, vocabulary=vocab.name,
            similarity=self.similarity, n_images=n_images, neurons=picked,
            labels=[vocab.concepts[i] for i in best], concepts=list(vocab.concepts),
            scores=scores.numpy(), activations=acts[:, picked].numpy() if keep_activations else None,
            settings=dict(self.settings))
