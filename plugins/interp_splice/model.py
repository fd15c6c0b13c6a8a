"""SpLiCE: sparse, nonnegative, interpretable decompositions of CLIP image embeddings.

:class:`SpliceModel` mirrors the reference implementation's ``SPLICE`` module (same method
names and flags), on any interpcore backbone with image and text encoders, with a fast
default solver. :class:`SpliceDecomposer` is what the registry hands out for
``get_decomposer("splice", backbone, ...)``: it builds the concept dictionary and image mean
for a backbone and a vocabulary and returns :class:`SpliceResult` objects.

The computation, for an image embedding ``z``::

    v     = normalize(normalize(z) - mu)                 # centred with the image mean mu
    w*    = argmin_{w >= 0} ||C^T w - v||^2 + l1 * ||w||_1
    z_hat = normalize(normalize(w* C) + mu)              # the SpLiCE embedding
    L0 = #{j : w*_j > 0},   cosine = cos(z_hat, normalize(z))

with ``C`` the concept dictionary (rows: mean-centred, unit-norm text embeddings).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from interpcore import Capability, Decomposer, InterpError, Result, default_for
from interpcore.base import to_jsonable

from .solvers import SolveInfo, check_problem, make_solver, resolve_solver_name

DEFAULT_L1 = 0.25

# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


def _nonzero_sorted(weights: torch.Tensor, concepts: Sequence[str], k: int | None = None):
    """``[(concept, index, weight)]`` of the nonzero entries, largest weight first."""
    w = weights.detach().float().cpu()
    idx = (w > 0).nonzero().flatten()
    order = torch.argsort(w[idx], descending=True, stable=True)
    idx = idx[order]
    if k is not None:
        idx = idx[:k]
    return [(concepts[i] if i < len(concepts) else str(i), int(i), float(w[i])) for i in idx.tolist()]


@dataclasses.dataclass
class SpliceResult(Result):
    """Sparse concept decompositions of a batch of images (or embeddings).

    ``weights`` is dense ``(n, concepts)`` on the CPU; ``l0`` / ``cosine`` / ``objective`` /
    ``gap`` are per image. ``str(result)`` prints the reference script's report for each
    image; ``to_dict()`` lists only the nonzero concepts.
    """

    images: list[str]
    concepts: list[str]
    weights: torch.Tensor
    l0: torch.Tensor
    cosine: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor | None = None
    l1_penalty: float = DEFAULT_L1
    backbone: str = "?"
    vocabulary: str = "?"
    solver: str = "active_set"
    seconds: float = 0.0

    @property
    def verification(self):
        """The largest relative duality gap over the images: a certificate that each
        objective is within that fraction of the optimum (``None`` for solvers that give
        no gap, e.g. ``sklearn``)."""
        if self.gap is None or not self.gap.numel():
            return None
        return _gap_verification(relative_gap(self.gap, self.objective))

    @property
    def mean_l0(self) -> float:
        return float(self.l0.float().mean()) if self.l0.numel() else float("nan")

    @property
    def mean_cosine(self) -> float:
        return float(self.cosine.float().mean()) if self.cosine.numel() else float("nan")

    def __len__(self) -> int:
        return self.weights.shape[0]

    def top(self, i: int = 0, k: int | None = None) -> list[tuple[str, float]]:
        """The nonzero concepts of image ``i`` as ``(concept, weight)``, largest first."""
        return [(c, w) for c, _, w in _nonzero_sorted(self.weights[i], self.concepts, k)]

    def to_dict(self) -> dict:
        images = []
        for i, name in enumerate(self.images):
            images.append({
                "image": name,
                "l0": int(self.l0[i]),
                "cosine": float(self.cosine[i]),
                "objective": float(self.objective[i]),
                "gap": None if self.gap is None else float(self.gap[i]),
                "concepts": [{"concept": c, "index": j, "weight": w}
                             for c, j, w in _nonzero_sorted(self.weights[i], self.concepts)],
            })
        return {
            "method": "splice", "backbone": self.backbone, "vocabulary": self.vocabulary,
            "vocabulary_size": len(self.concepts), "l1_penalty": self.l1_penalty,
            "solver": self.solver, "seconds": self.seconds, "mean_l0": self.mean_l0,
            "mean_cosine": self.mean_cosine, "images": images,
        }

    def format(self, i: int = 0, *, decimals: int = 4, topk: int | None = None) -> str:
        """The reference script's printout for image ``i``."""
        lines = [f"Concept Decomposition of {self.images[i]}:"]
        for c, _, w in _nonzero_sorted(self.weights[i], self.concepts, topk):
            lines.append(f"\t{c}\t{round(w, decimals)}")
        lines.append(f"Decomposition L0 Norm: \t{int(self.l0[i])}")
        lines.append(f"CLIP, SpLiCE Cosine Sim: \t{round(float(self.cosine[i]), decimals)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join(self.format(i) for i in range(len(self)))

    def figure(self, i: int = 0, k: int = 10):
        """A bar chart of image ``i``'s ``k`` largest concept weights (a matplotlib figure;
        shown inline by the notebook view)."""
        if not len(self):
            raise InterpError("an empty decomposition has nothing to draw")
        from interpcore import figures

        top = self.top(i, k)
        return figures.bar_chart([c for c, _ in top], [w for _, w in top], xlabel="weight",
                                 title=f"{Path(str(self.images[i])).name}: top concepts",
                                 sort=False)


def relative_gap(gap, objective) -> float:
    """The largest duality gap relative to its objective over a batch."""
    return float((gap.double() / objective.double().abs().clamp_min(1e-300)).max())


def _gap_verification(value: float | None):
    if value is None:
        return None
    from interpcore import Verification

    return Verification("largest relative duality gap", float(value), 1e-4)


@dataclasses.dataclass
class DatasetDecomposition(Result):
    """Concept distribution of a dataset (``decompose_dataset``) or of its classes.

    ``mean_weights`` ``(concepts,)`` averages the sparse weights over all images;
    ``class_weights`` maps each label to its class's average; ``mean_l0`` and
    ``mean_cosine`` are per-image means (not batch sums). ``concept_cosine`` (and
    ``class_concept_cosine`` per label) is the cosine of the mean centred image embedding
    with each concept: a word can lead the weights while others are closer to the mean, when
    the images' embeddings also lie near it (``None`` / empty when not computed).
    """

    dataset: str
    concepts: list[str]
    mean_weights: torch.Tensor
    mean_l0: float
    mean_cosine: float
    count: int
    class_weights: dict = dataclasses.field(default_factory=dict)
    class_counts: dict = dataclasses.field(default_factory=dict)
    class_names: dict = dataclasses.field(default_factory=dict)
    class_l0: dict = dataclasses.field(default_factory=dict)
    class_cosine: dict = dataclasses.field(default_factory=dict)
    l1_penalty: float = DEFAULT_L1
    backbone: str = "?"
    vocabulary: str = "?"
    seconds: float = 0.0
    #: the largest relative duality gap over every decomposed image (``None``: the solver
    #: gives no gap)
    max_relative_gap: float | None = None
    concept_cosine: torch.Tensor | None = None
    class_concept_cosine: dict = dataclasses.field(default_factory=dict)
    #: the engine job folder the per-image decompositions were read from (``None``: computed
    #: in this process); ``.job`` is then that run's :class:`interpcore.engine.JobResult`
    job_dir: str | None = None

    @property
    def verification(self):
        """As :attr:`SpliceResult.verification`, over every image of the dataset."""
        return _gap_verification(self.max_relative_gap)

    def _closeness(self, label=None):
        return self.concept_cosine if label is None else self.class_concept_cosine.get(label)

    def top(self, k: int | None = None, label=None) -> list[tuple[str, float]]:
        w = self.mean_weights if label is None else self.class_weights[label]
        return [(c, v) for c, _, v in _nonzero_sorted(w, self.concepts, k)]

    def to_dict(self, topk: int | None = None) -> dict:
        def concepts(w, cos=None):
            return [{"concept": c, "index": j, "weight": v,
                     **({} if cos is None else {"cosine_with_mean": float(cos[j])})}
                    for c, j, v in _nonzero_sorted(w, self.concepts, topk)]

        return {
            "method": "splice", "dataset": self.dataset, "backbone": self.backbone,
            "vocabulary": self.vocabulary, "vocabulary_size": len(self.concepts),
            "l1_penalty": self.l1_penalty, "count": self.count, "mean_l0": self.mean_l0,
            "mean_cosine": self.mean_cosine, "seconds": self.seconds,
            "concepts": concepts(self.mean_weights, self.concept_cosine),
            **({"job_dir": self.job_dir} if self.job_dir is not None else {}),
            "classes": [
                {"label": to_jsonable(lab), "name": self.class_names.get(lab, str(lab)),
                 "count": self.class_counts.get(lab, 0), "mean_l0": self.class_l0.get(lab),
                 "mean_cosine": self.class_cosine.get(lab),
                 "concepts": concepts(w, self.class_concept_cosine.get(lab))}
                for lab, w in self.class_weights.items()
            ],
        }

    def format(self, label=None, *, decimals: int = 4, topk: int | None = None) -> str:
        w = self.mean_weights if label is None else self.class_weights[label]
        head = "Concept Decomposition:" if label is None else \
            f"Concept Decomposition of class {self.class_names.get(label, label)}:"
        closeness = self._closeness(label)
        lines = [head]
        for c, j, v in _nonzero_sorted(w, self.concepts, topk):
            if round(v, decimals) == 0:
                break
            extra = "" if closeness is None else f"\t{float(closeness[j]):.3f}"
            lines.append(f"\t{c}\t{round(v, decimals)}{extra}")
        l0 = self.mean_l0 if label is None else self.class_l0.get(label, float("nan"))
        cos = self.mean_cosine if label is None else self.class_cosine.get(label, float("nan"))
        lines.append(f"Average Decomposition L0 Norm: \t{l0}")
        lines.append(f"Average CLIP, SpLiCE Cosine Sim: \t{round(cos, decimals)}")
        if closeness is not None:
            near = torch.argsort(closeness, descending=True, stable=True)[:3].tolist()
            lines.append("Third column: cosine of the mean centred image embedding with the concept; "
                         "closest concepts: " + ", ".join(
                             f"{self.concepts[j]} {float(closeness[j]):.3f}" for j in near))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def _resolve_device(device, backbone=None) -> torch.device:
    from interpcore.torch_backbone import resolve_device

    if (device is None or str(device) == "auto") and backbone is not None:
        dev = getattr(backbone, "device", None)
        if dev is not None:
            return torch.device(dev)
    return resolve_device(device)


def _as_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        import numpy as np

        if isinstance(x, np.ndarray):
            return torch.from_numpy(np.asarray(x))
    except ImportError:  # pragma: no cover
        pass
    raise InterpError(f"{what} must be a tensor or numpy array, got {type(x).__name__}")


class SpliceModel(torch.nn.Module):
    """Decomposes images into sparse nonnegative combinations of concept embeddings.

    Parameters (as in the reference ``SPLICE``)
    ----------
    image_mean: ``(d,)`` mean of normalized image embeddings for the backbone.
    dictionary: ``(c, d)`` concept dictionary (unit, mean-centred rows).
    clip / backbone: an interpcore backbone, or (the reference's ``clip=``) any module with
        ``encode_image(pixels)`` and ``encode_text(tokens)``, which is then given
        preprocessed pixel tensors and the texts as passed; ``None`` when inputs are already
        embeddings. ``.clip`` is that module or backbone.
    solver: ``"active_set"`` (default, fast, certified), ``"sklearn"`` (reference) or
        ``"admm"``; ``"skl"`` is accepted for the reference's name.
    l1_penalty: sparsity penalty (larger: fewer concepts).
    return_weights: ``encode_image`` returns the sparse weights instead of the dense
        SpLiCE embedding. return_cosine: also return the per-image cosine (a tensor of
        shape ``(n,)``; the reference returned the sum over the batch).
    decomp_text / text_mean: decompose text embeddings too, centred with ``text_mean``.
    vocabulary: the concept names (row ``i`` of the dictionary is ``vocabulary[i]``).
    solver_options: passed to the solver (e.g. ``tol=1e-6``, ``chunk_size=``).
    """

    #: the names a worker rebuilds this model from (set by :class:`SpliceDecomposer`; ``None``
    #: for a model built from tensors, which dataset decompositions then run in process)
    recipe: dict | None = None

    def __init__(self, image_mean, dictionary, clip=None, solver: str = "active_set",
                 l1_penalty: float = DEFAULT_L1, return_weights: bool = False,
                 return_cosine: bool = False, decomp_text: bool = False, text_mean=None,
                 device="auto", *, backbone=None, vocabulary=None, vocabulary_name: str = "custom",
                 solver_options: dict | None = None, batch_size: int = 64):
        super().__init__()
        from interpcore import Backbone

        module = backbone if backbone is not None else clip
        # anything that is not an interpcore backbone is driven like the reference drives clip=
        is_backbone = isinstance(module, Backbone) or hasattr(module, "capabilities")
        self.backbone = module if is_backbone else None
        self.device = _resolve_device(device, self.backbone)
        if module is not None and not is_backbone:
            for need in ("encode_image", "encode_text"):
                if not callable(getattr(module, need, None)):
                    raise InterpError(f"clip= must have encode_image and encode_text; "
                                      f"{type(module).__name__} has no {need}")
            if callable(getattr(module, "to", None)):
                module = module.to(self.device)
        self.clip = module
        D = _as_tensor(dictionary, "the concept dictionary")
        mu = _as_tensor(image_mean, "the image mean")
        if D.dim() != 2:
            raise InterpError(f"the concept dictionary must be (concepts, dim), got shape {tuple(D.shape)}")
        if D.shape[0] == 0:
            raise InterpError("the concept dictionary is empty: the vocabulary has no concepts")
        mu = mu.reshape(-1) if mu.dim() > 1 and mu.numel() == mu.shape[-1] else mu
        if mu.dim() != 1 or mu.shape[0] != D.shape[1]:
            raise InterpError(
                f"the image mean has shape {tuple(mu.shape)} but the dictionary's embeddings "
                f"have {D.shape[1]} dimensions"
            )
        if not bool(torch.isfinite(D).all()) or not bool(torch.isfinite(mu).all()):
            raise InterpError("the concept dictionary or image mean contains NaN or infinite values")
        backbone = self.backbone
        dim = getattr(backbone, "embed_dim", None) if backbone is not None else None
        if dim is not None and dim != D.shape[1]:
            raise InterpError(
                f"backbone '{backbone.name}' gives {dim}-dim embeddings but the dictionary has "
                f"{D.shape[1]} dimensions: it was built for another model"
            )
        self.register_buffer("dictionary", D.float().to(self.device).contiguous())
        self.register_buffer("image_mean", mu.float().to(self.device))
        if text_mean is not None:
            self.register_buffer("text_mean", _as_tensor(text_mean, "the text mean").float().reshape(-1).to(self.device))
        else:
            self.text_mean = None
        self.solver = resolve_solver_name(solver)
        self.solver_options = dict(solver_options or {})
        self._l1 = None
        self.l1_penalty = l1_penalty
        self.return_weights = bool(return_weights)
        self.return_cosine = bool(return_cosine)
        self.decomp_text = bool(decomp_text)
        self.batch_size = int(batch_size)
        if vocabulary is not None:
            names = list(getattr(vocabulary, "concepts", vocabulary))
            if len(names) != D.shape[0]:
                raise InterpError(
                    f"the vocabulary has {len(names)} concepts but the dictionary has {D.shape[0]} rows"
                )
            self.vocabulary = names
            self.vocabulary_name = getattr(vocabulary, "name", vocabulary_name)
        else:
            self.vocabulary = [str(i) for i in range(D.shape[0])]
            self.vocabulary_name = vocabulary_name
        self._solver_obj = None
        self.last_info: SolveInfo | None = None

    # -- settings ---------------------------------------------------------------------------
    @property
    def l1_penalty(self) -> float:
        return self._l1

    @l1_penalty.setter
    def l1_penalty(self, value) -> None:
        check_problem(torch.zeros(1, 1), torch.zeros(1, 1), value)
        self._l1 = float(value)

    @property
    def embed_dim(self) -> int:
        return self.dictionary.shape[1]

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .cuda(): rebuild the solver there
        out = super()._apply(fn, *args, **kwargs)
        self._solver_obj = None
        self.device = self.dictionary.device
        return out

    def _solve(self, v: torch.Tensor):
        if self._solver_obj is None:
            self._solver_obj = make_solver(self.solver, self.dictionary, **self.solver_options)
        W, info = self._solver_obj(v.to(self.dictionary.device), self.l1_penalty, return_info=True)
        self.last_info = info
        return W

    # -- inputs -----------------------------------------------------------------------------
    def embed_images(self, image) -> torch.Tensor:
        """Raw image embeddings ``(n, d)`` from pixels / PIL images / paths, or embeddings as given.

        A 2-D tensor (or array) with ``d`` columns, or a 1-D one of length ``d``, is taken
        as embeddings; 3-D / 4-D tensors are preprocessed pixels for the backbone.
        """
        d = self.embed_dim
        if not isinstance(image, torch.Tensor):
            try:
                import numpy as np

                if isinstance(image, np.ndarray) and image.ndim in (1, 2) and image.shape[-1] == d:
                    image = torch.from_numpy(np.asarray(image, dtype=np.float32))
            except ImportError:  # pragma: no cover
                pass
        if isinstance(image, torch.Tensor):
            if image.dim() == 1:
                image = image[None]
            if image.dim() == 2:
                if image.shape[1] != d:
                    raise InterpError(
                        f"embeddings have {image.shape[1]} dimensions but the concept dictionary "
                        f"has {d}: they come from a different model"
                    )
                z = image.detach().float().to(self.device)
                if not bool(torch.isfinite(z).all()):
                    raise InterpError("the embeddings contain NaN or infinite values")
                return z
            if image.dim() not in (3, 4):
                raise InterpError(
                    f"expected embeddings (n, {d}) or pixels (n, C, H, W), got shape {tuple(image.shape)}"
                )
        if self.backbone is None and self.clip is not None:
            return self._module_embeddings(image)
        if self.backbone is None:
            raise InterpError(
                "this SpLiCE model has no backbone, so it takes embeddings (n, "
                f"{d}) only; got {type(image).__name__}"
            )
        if not self.backbone.has(Capability.IMAGE_ENCODER):
            raise InterpError(f"backbone '{self.backbone.name}' cannot encode images")
        if isinstance(image, (str, os.PathLike)):
            image = [image]
        z = self.backbone.encode_image(image, batch_size=self.batch_size)
        z = torch.as_tensor(z).detach().float().to(self.device)
        if not bool(torch.isfinite(z).all()):
            raise InterpError(f"backbone '{self.backbone.name}' produced NaN or infinite embeddings")
        return z

    def _module_embeddings(self, image) -> torch.Tensor:
        """Image embeddings from a plain ``clip=`` module, fed pixel batches as the reference does."""
        if not isinstance(image, torch.Tensor):
            raise InterpError(
                f"this SpLiCE model's clip module ({type(self.clip).__name__}) takes preprocessed "
                f"pixel tensors (n, C, H, W), not {type(image).__name__}: preprocess the images first"
            )
        pixels = image[None] if image.dim() == 3 else image
        if callable(getattr(self.clip, "eval", None)):
            self.clip.eval()
        with torch.no_grad():
            z = torch.cat([torch.as_tensor(self.clip.encode_image(pixels[i:i + self.batch_size].to(self.device)))
                           for i in range(0, pixels.shape[0], self.batch_size)])
        z = z.detach().float().reshape(pixels.shape[0], -1).to(self.device)
        if z.shape[1] != self.embed_dim or not bool(torch.isfinite(z).all()):
            raise InterpError(
                f"the clip module gave embeddings of shape {tuple(z.shape)} (finite: "
                f"{bool(torch.isfinite(z).all())}) but the dictionary has {self.embed_dim} dimensions"
            )
        return z

    @property
    def source(self) -> str:
        """What the inputs go through: the backbone's name, the clip module's class, or
        ``embeddings``."""
        if self.backbone is not None:
            return getattr(self.backbone, "name", "?")
        return type(self.clip).__name__ if self.clip is not None else "embeddings"

    def center(self, z: torch.Tensor, mean=None) -> torch.Tensor:
        mean = self.image_mean if mean is None else mean
        return F.normalize(F.normalize(z, dim=1) - mean, dim=1)

    # -- the reference API -----------------------------------------------------------------
    def decompose(self, embedding: torch.Tensor) -> torch.Tensor:
        """Sparse weights ``(n, c)`` for centred, normalized embeddings (as the reference)."""
        if embedding.dim() == 1:
            embedding = embedding[None]
        # the solvers check the dictionary's values themselves (the default one once, when
        # it is built): one row here keeps the shape checks without a pass over all of it
        check_problem(self.dictionary[:1], embedding, self.l1_penalty)
        return self._solve(embedding.float())

    def _weights_times_dictionary(self, weights: torch.Tensor) -> torch.Tensor:
        """``w C`` for sparse weight rows: a CSR product that reads only the used concepts'
        rows, instead of a dense ``n x c`` by ``c x d`` product (as long as a full solve)."""
        W = weights.float().to(self.dictionary.device)
        if W.device.type == "cpu" and W.dim() == 2 and W.shape[0] * W.shape[1] >= 1 << 16:
            nz = int(torch.count_nonzero(W))
            if nz * 20 <= W.numel():
                return torch.sparse.mm(W.to_sparse_csr(), self.dictionary.float())
        return W @ self.dictionary

    def recompose_image(self, weights: torch.Tensor) -> torch.Tensor:
        """Dense SpLiCE embeddings ``normalize(normalize(w C) + mu)``."""
        if weights.dim() == 1:
            weights = weights[None]
        if weights.shape[-1] != self.dictionary.shape[0]:
            raise InterpError(
                f"weights have {weights.shape[-1]} entries but the dictionary has "
                f"{self.dictionary.shape[0]} concepts"
            )
        recon = F.normalize(self._weights_times_dictionary(weights), dim=1)
        return F.normalize(recon + self.image_mean, dim=1)

    def recompose_text(self, weights: torch.Tensor) -> torch.Tensor:
        if self.text_mean is None:
            raise InterpError("recompose_text needs text_mean= (the mean text embedding)")
        recon = F.normalize(self._weights_times_dictionary(weights), dim=1)
        return F.normalize(recon + self.text_mean, dim=1)

    def _weights_and_cosine(self, image):
        z = F.normalize(self.embed_images(image), dim=1)
        weights = self.decompose(self.center(z))
        recon = self.recompose_image(weights)
        return weights, recon, (recon * z).sum(1), z

    def encode_image(self, image):
        """SpLiCE-encode images (pixels, PIL images, paths) or raw embeddings.

        Returns the dense reconstruction, or the weights with ``return_weights``; with
        ``return_cosine`` a pair whose second item is the per-image cosine ``(n,)``.
        """
        with torch.no_grad():
            weights, recon, cosine, _ = self._weights_and_cosine(image)
        out = weights if self.return_weights else recon
        return (out, cosine) if self.return_cosine else out

    def encode_text(self, text):
        """Text embeddings (normalized), decomposed too when ``decomp_text`` is set."""
        if isinstance(text, torch.Tensor) and text.dim() == 2 and text.shape[1] == self.embed_dim \
                and text.is_floating_point():
            t = text.float().to(self.device)
        elif self.backbone is None and self.clip is not None:
            if callable(getattr(self.clip, "eval", None)):
                self.clip.eval()
            with torch.no_grad():  # the texts as given (tokens, for the reference's modules)
                t = torch.as_tensor(self.clip.encode_text(text)).detach().float().to(self.device)
            t = t.reshape(-1, t.shape[-1])
        else:
            if self.backbone is None:
                raise InterpError("this SpLiCE model has no backbone: pass text embeddings")
            if isinstance(text, str):
                text = [text]
            t = torch.as_tensor(self.backbone.encode_text(text)).float().to(self.device)
        t = F.normalize(t, dim=1)
        if not self.decomp_text:
            return t
        if self.text_mean is None:
            raise InterpError("decomp_text=True needs text_mean= (the mean text embedding)")
        weights = self.decompose(self.center(t, self.text_mean))
        return weights if self.return_weights else self.recompose_text(weights)

    def intervene_image(self, image, intervention_indices):
        """Decompose, zero the given concepts (indices or concept names) and recompose."""
        with torch.no_grad():
            z = F.normalize(self.embed_images(image), dim=1)
            weights = self.decompose(self.center(z)).clone()
        idx = self.concept_indices(intervention_indices)
        if idx:
            weights[:, idx] = 0
        return weights if self.return_weights else self.recompose_image(weights)

    def forward(self, image, text):
        return self.encode_image(image), self.encode_text(text)

    # -- conveniences -----------------------------------------------------------------------
    def concept_indices(self, concepts) -> list[int]:
        """Dictionary rows for concept names or indices (unknown names: an error with matches)."""
        if isinstance(concepts, (int, str)):
            concepts = [concepts]
        lookup = {c: i for i, c in enumerate(self.vocabulary)}
        out = []
        for c in concepts:
            if isinstance(c, torch.Tensor):
                c = c.item()
            if isinstance(c, str):
                if c not in lookup:
                    from interpcore.errors import close_matches

                    near = close_matches(c, self.vocabulary)
                    hint = f" Did you mean: {', '.join(near)}?" if near else ""
                    raise InterpError(f"concept '{c}' is not in the vocabulary.{hint}")
                out.append(lookup[c])
            else:
                i = int(c)
                if not -len(self.vocabulary) <= i < len(self.vocabulary):
                    raise InterpError(f"concept index {i} is out of range for {len(self.vocabulary)} concepts")
                out.append(i % len(self.vocabulary))
        return out

    def explain(self, image, names: Sequence[str] | None = None) -> SpliceResult:
        """Decompose images or embeddings and return a :class:`SpliceResult`."""
        t0 = time.perf_counter()
        with torch.no_grad():
            weights, _, cosine, _ = self._weights_and_cosine(image)
        info = self.last_info
        n = weights.shape[0]
        if names is None:
            if isinstance(image, (str, os.PathLike)):
                names = [str(image)]
            elif isinstance(image, (list, tuple)) and all(isinstance(x, (str, os.PathLike)) for x in image):
                names = [str(x) for x in image]
            else:
                names = [f"image {i}" for i in range(n)]
        names = list(names)
        if len(names) != n:
            raise InterpError(f"got {len(names)} names for {n} images")
        w = weights.detach().float().cpu()
        return SpliceResult(
            images=names, concepts=self.vocabulary, weights=w,
            l0=(w > 0).sum(1), cosine=cosine.detach().float().cpu(),
            objective=info.objective if info is not None else torch.full((n,), float("nan")),
            gap=info.gap if info is not None else None,
            l1_penalty=self.l1_penalty, backbone=self.source,
            vocabulary=self.vocabulary_name, solver=self.solver,
            seconds=time.perf_counter() - t0,
        )

    def job_arrays(self, image) -> dict:
        """Per-image arrays of a dataset decomposition run as an engine job
        (:mod:`interp_splice.engine_job`): ``weights``, ``l0``, ``cosine``, ``centred`` (the
        normalized, centred embedding that was decomposed: its sum over images gives
        :attr:`DatasetDecomposition.concept_cosine`) and ``relative_gap`` (each image's duality
        gap over its objective; absent for solvers that give no gap)."""
        with torch.no_grad():
            weights, _, cosine, zn = self._weights_and_cosine(image)
            centred = self.center(zn)
        w = weights.detach().float().cpu()
        out = {"weights": w, "l0": (w > 0).sum(1).to(torch.int32),
               "cosine": cosine.detach().float().cpu(), "centred": centred.detach().float().cpu()}
        info = self.last_info
        if info is not None and info.gap is not None:
            out["relative_gap"] = (info.gap.double().cpu()
                                   / info.objective.double().cpu().abs().clamp_min(1e-300))
        return out

    def get_vocabulary(self) -> list[str]:
        return list(self.vocabulary)

    def extra_repr(self) -> str:
        return (f"backbone={self.source}, vocabulary={self.vocabulary_name} "
                f"({self.dictionary.shape[0]} concepts), l1_penalty={self.l1_penalty}, solver={self.solver}")


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


def _iter_batches(data, batch_size: int = 64, limit: int | None = None, desc: str = "decomposing"):
    """Yield ``(images, labels or None)`` from a DataLoader-like iterable of ``(x, y)`` / ``x``,
    or from an interpcore Dataset (dict samples), with a progress bar for the latter."""
    from interpcore import Dataset

    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                                     and not isinstance(data, (torch.Tensor, list, tuple))
                                     and not hasattr(data, "batch_size")):
        from interpcore.data import batched_samples

        for _, samples in batched_samples(data, batch_size, limit, desc=desc):
            if samples and not isinstance(samples[0], dict):
                raise InterpError(
                    f"dataset items must be dicts with an 'image' key (interpcore datasets) "
                    f"or (image, label) pairs from a DataLoader; got {type(samples[0]).__name__}"
                )
            images = [s["image"] for s in samples]
            labels = [s.get("label") for s in samples]
            yield images, (None if any(x is None for x in labels) else torch.tensor(labels))
        return
    from interpcore.progress import progress

    seen = 0
    for batch in progress(data, desc=desc, unit="batch"):
        if isinstance(batch, (list, tuple)) and len(batch) == 2:
            images, labels = batch
            labels = torch.as_tensor(labels) if labels is not None else None
        else:
            images, labels = batch, None
        if limit is not None:
            n = len(images)
            if seen >= limit:
                break
            if seen + n > limit:
                images = images[: limit - seen]
                labels = None if labels is None else labels[: limit - seen]
        seen += len(images)
        yield images, labels


#: images a dataset decomposition solves together (its batches are embedded one by one)
SOLVE_BLOCK = 512


def _take(pending: list):
    """Concatenate and clear a list of ``(embeddings, labels or None)`` batches."""
    z = torch.cat([p[0] for p in pending])
    labels = (None if any(p[1] is None for p in pending)
              else torch.cat([torch.as_tensor(p[1]) for p in pending]))
    pending.clear()
    return z, labels


def decompose_data(model: SpliceModel, data, *, target_label=None, by_class: bool = False,
                   batch_size: int = 64, limit: int | None = None, name: str | None = None,
                   class_names: Sequence[str] | None = None, job_dir=None,
                   engine: str = "local", shard_size: int = 256, overwrite: bool = False,
                   in_process: bool = False, **engine_options) -> DatasetDecomposition:
    """Mean concept weights over a dataset, optionally per class (or for one class).

    When the dataset and the model can be named for workers (a registered dataset name or a
    dataset from ``get_dataset``; a model built from names by :class:`SpliceDecomposer` or
    ``load()``), the per-image decompositions run as a sharded, resumable
    :mod:`interpcore.engine` job in ``job_dir`` (default: the user cache, named by the job's
    hash) on ``engine`` (``local``: this process and this model; ``ray`` with
    ``address``/``num_workers``), and the averages are read back from the job folder: a
    rerun computes nothing and a killed run recomputes only its missing shards. Otherwise
    (DataLoaders, tensors, hand-built datasets or models, ``in_process=True``) the dataset
    is streamed through the model here, as the reference does, with the same numbers.
    """
    t0 = time.perf_counter()
    class_names = class_names if class_names is not None else getattr(data, "classes", None)
    if class_names is None and hasattr(data, "dataset"):
        class_names = getattr(data.dataset, "classes", None)
    target_label = _resolve_target(target_label, class_names)
    if not in_process:
        from . import engine_job

        spec = engine_job.job_spec(model, data, limit=limit, batch_size=batch_size,
                                   shard_size=shard_size)
        if spec is not None:
            return engine_job.decompose(
                model, spec, data, job_dir=job_dir, engine=engine, overwrite=overwrite,
                target_label=target_label, by_class=by_class, name=name,
                class_names=class_names, t0=t0, **engine_options)
    return _decompose_here(model, data, target_label=target_label, by_class=by_class,
                           batch_size=batch_size, limit=limit, name=name,
                           class_names=class_names, t0=t0)


def _resolve_target(target_label, class_names):
    """A class name -> its index; an index out of the dataset's classes -> an InterpError."""
    if isinstance(target_label, str):
        if not class_names or target_label not in class_names:
            near = ""
            if class_names:
                from interpcore.errors import close_matches

                m = close_matches(target_label, class_names)
                near = f" Did you mean: {', '.join(m)}?" if m else ""
            raise InterpError(f"class '{target_label}' is not a class of this dataset.{near}")
        target_label = list(class_names).index(target_label)
    if target_label is not None and class_names and not 0 <= int(target_label) < len(class_names):
        raise InterpError(
            f"class label {target_label} is out of range: the dataset has {len(class_names)} classes"
        )
    return target_label


class _Sums:
    """Running float64 sums of a dataset decomposition, over all images and per class; both
    paths (in this process, from a job folder) add to it, so they average alike."""

    def __init__(self, model: SpliceModel, need_labels: bool):
        self.model, self.need_labels = model, need_labels
        self.total = torch.zeros(model.dictionary.shape[0], dtype=torch.float64)
        self.v_total = torch.zeros(model.embed_dim, dtype=torch.float64)
        self.l0 = self.cos = 0.0
        self.count = 0
        self.gap: float | None = 0.0  # the largest relative duality gap so far (None: no gaps)
        self.cls: dict = {}  # label -> [weight sums, count, L0 sum, cosine sum, centred sums]

    def add(self, w, l0, cosine, v, labels=None, gap: float | None = None) -> None:
        """One block of images: weights ``(n, c)``, L0, cosine ``(n,)``, centred embeddings
        ``(n, d)`` (float64 tensors), labels, and the block's largest relative gap."""
        if not w.shape[0]:
            return
        self.gap = None if gap is None or self.gap is None else max(self.gap, gap)
        self.total += w.sum(0)
        self.v_total += v.sum(0)
        self.l0 += float(l0.sum())
        self.cos += float(cosine.sum())
        self.count += w.shape[0]
        if self.need_labels:
            for lab in labels.unique().tolist():
                m = labels == lab
                acc = self.cls.setdefault(lab, [0.0, 0, 0.0, 0.0, 0.0])
                acc[0] = acc[0] + w[m].sum(0)
                acc[1] += int(m.sum())
                acc[2] += float(l0[m].sum())
                acc[3] += float(cosine[m].sum())
                acc[4] = acc[4] + v[m].sum(0)

    def result(self, *, name, class_names, target_label, t0) -> DatasetDecomposition:
        if self.count == 0:
            what = f"class {target_label}" if target_label is not None else "the dataset"
            raise InterpError(f"no images to decompose in {what}")
        model, cls = self.model, self.cls
        labs = sorted(cls)
        D = model.dictionary.detach().double().cpu()

        def closeness(v_sum):
            return (D @ F.normalize(v_sum, dim=0)).float()

        return DatasetDecomposition(
            dataset=name, concepts=model.vocabulary,
            mean_weights=(self.total / self.count).float(), mean_l0=self.l0 / self.count,
            mean_cosine=self.cos / self.count, count=self.count,
            class_weights={k: (cls[k][0] / cls[k][1]).float() for k in labs},
            class_counts={k: cls[k][1] for k in labs},
            class_names={k: (class_names[k] if class_names and 0 <= k < len(class_names) else str(k))
                         for k in labs},
            class_l0={k: cls[k][2] / cls[k][1] for k in labs},
            class_cosine={k: cls[k][3] / cls[k][1] for k in labs},
            l1_penalty=model.l1_penalty, backbone=getattr(model.backbone, "name", "embeddings"),
            vocabulary=model.vocabulary_name, seconds=time.perf_counter() - t0,
            max_relative_gap=self.gap, concept_cosine=closeness(self.v_total),
            class_concept_cosine={k: closeness(cls[k][4]) for k in labs},
        )


def _decompose_here(model: SpliceModel, data, *, target_label, by_class, batch_size, limit,
                    name, class_names, t0) -> DatasetDecomposition:
    """:func:`decompose_data` streamed through ``model`` in this process."""
    need_labels = by_class or target_label is not None
    sums = _Sums(model, need_labels)
    pending: list = []  # (embeddings, labels) of batches not solved yet

    def blocks():
        """Embeddings solved in blocks of at least SOLVE_BLOCK images: the solver's cost per
        image falls with the batch (its per-round operations cost the same for 64 images as
        for 512), and the dataset's means do not depend on how it is split."""
        n = 0
        for images, labels in _iter_batches(data, batch_size, limit,
                                            desc=f"SpLiCE {name or 'dataset'}"):
            if need_labels and labels is None:
                raise InterpError("per-class decomposition needs labels, but the dataset gives none")
            if target_label is not None:
                keep = (labels == int(target_label)).nonzero().flatten()
                if keep.numel() == 0:
                    continue
                if isinstance(images, torch.Tensor):
                    images = images[keep]
                else:
                    images = [images[i] for i in keep.tolist()]
                labels = labels[keep]
            with torch.no_grad():
                pending.append((model.embed_images(images), labels))
            n += pending[-1][0].shape[0]
            if n >= SOLVE_BLOCK:
                yield _take(pending)
                n = 0
        if pending:
            yield _take(pending)

    for z, labels in blocks():
        with torch.no_grad():
            weights, _, cosine, zn = model._weights_and_cosine(z)
        info = model.last_info
        gap = None if info is None or info.gap is None else relative_gap(info.gap, info.objective)
        w = weights.detach().double().cpu()
        sums.add(w, (w > 0).sum(1).double(), cosine.detach().double().cpu(),
                 model.center(zn).detach().double().cpu(), labels, gap)
    return sums.result(name=name or getattr(data, "name", "dataset"), class_names=class_names,
                       target_label=target_label, t0=t0)


# --------------------------------------------------------------------------------------
# Image means: where they come from
# --------------------------------------------------------------------------------------

#: SpLiCE's published image means (backbone name -> (file, sha256, weights they belong to)).
PUBLISHED_MEANS = {
    "clip:ViT-B/32": ("clip_ViT-B-32_image.pt",
                      "dbd73aec9162cc26d3850c042b2a035720c1f6d38fc0b64a73518995f884202b", ("openai",)),
    "clip:ViT-B/16": ("clip_ViT-B-16_image.pt",
                      "2907555438ef16b4677cb72ad81b3c3fe8c9246028714e943dba6c3b91d67eee", ("openai",)),
    "clip:RN50": ("clip_RN50_image.pt",
                  "e1ee3345ef6faf6f8ebc30f649189bf4e583fe71229b2955e227cf59124d42fa", ("openai",)),
    "open_clip:ViT-B-32": ("open_clip_ViT-B-32_image.pt",
                           "6b91c6d0e9006e27dfb6f13e6d25a90c5ff24eb14e4ee60cf064a7ddf9f646b7",
                           ("laion2b_s34b_b79k",)),
}
MEANS_URL = "https://raw.githubusercontent.com/AI4LIFE-GROUP/SpLiCE/main/data/means/"
MEANS_ENV = "INTERP_SPLICE_DIR"

#: When a backbone advertises ``defaults["image_mean"]`` (a dataset name), the mean is taken
#: over this many images of that dataset's training split.
ADVERTISED_MEAN_SPLIT, ADVERTISED_MEAN_LIMIT = "train", 2000

#: SpLiCE's own vocabulary, used when neither the user nor the backbone names one.
FALLBACK_VOCABULARY = "laion"


def published_mean_file(backbone_name: str, pretrained=None):
    """The :class:`~interpcore.download.RemoteFile` of SpLiCE's mean for a backbone, or None."""
    entry = PUBLISHED_MEANS.get(backbone_name)
    if entry is None:
        return None
    fname, sha, tags = entry
    if pretrained is not None:
        p = str(pretrained)
        if p not in tags and Path(p).name not in tags:
            return None  # other weights: the published mean does not apply
    from interpcore.download import RemoteFile

    return RemoteFile(f"splice/means/{fname}", MEANS_URL + fname, sha,
                      what=f"SpLiCE's image mean for {backbone_name}")


def resolve_image_mean(backbone, *, image_mean=None, mean_dataset=None, mean_split: str = "train",
                       mean_limit: int | None = None, folder=None, cache: bool = True):
    """The ``(d,)`` image mean for a backbone (see :class:`SpliceDecomposer` for the order)."""
    from interpcore import concepts

    if image_mean is not None:
        if isinstance(image_mean, (str, os.PathLike)):
            return concepts.image_mean(backbone, path=image_mean)
        t = _as_tensor(image_mean, "image_mean").float().reshape(-1)
        if backbone.embed_dim is not None and t.shape[0] != backbone.embed_dim:
            raise InterpError(
                f"image_mean has {t.shape[0]} dimensions but backbone '{backbone.name}' gives "
                f"{backbone.embed_dim}"
            )
        return t
    if mean_dataset is not None:
        return concepts.image_mean(backbone, mean_dataset, split=mean_split, limit=mean_limit,
                                   cache=cache)
    remote = published_mean_file(backbone.name, getattr(backbone, "pretrained", None))
    if remote is not None:
        from interpcore.download import locate

        path = locate(remote, folder=folder, env_var=MEANS_ENV, cache_subdir="downloads")
        return concepts.image_mean(backbone, path=path)
    shipped = getattr(backbone, "image_mean_file", None)  # a backbone plugin may ship one
    if shipped is not None and Path(shipped).is_file():
        return concepts.image_mean(backbone, path=shipped)
    advertised = default_for("image_mean", backbone)
    if advertised is not None:
        return concepts.image_mean(backbone, advertised, split=ADVERTISED_MEAN_SPLIT,
                                   limit=mean_limit or ADVERTISED_MEAN_LIMIT, cache=cache)
    raise InterpError(
        f"no image mean is known for backbone '{backbone.name}': pass image_mean= (a tensor or a "
        ".pt/.safetensors/.npy file) or mean_dataset= (a dataset name) "
        "(CLI: --image-mean PATH or --mean-dataset NAME)"
    )


def default_vocabulary(backbone, dataset=None) -> str:
    """The vocabulary used when none is named: the one ``dataset`` advertises, else the one
    ``backbone`` (a Backbone, or a name: its family's) advertises, else ``laion``."""
    if isinstance(backbone, str):
        backbone = family_defaults(backbone)
    return default_for("vocabulary", dataset, backbone, fallback=FALLBACK_VOCABULARY)


def family_defaults(backbone_name: str) -> dict:
    """What the family of a backbone name advertises (``register(..., defaults=)``), without
    loading the model; ``{}`` for an unknown family."""
    from interpcore import get_registry

    try:
        return dict(get_registry().entry("backbone", backbone_name.partition(":")[0]).defaults)
    except InterpError:
        return {}


# --------------------------------------------------------------------------------------
# The registry's decomposer
# --------------------------------------------------------------------------------------


class SpliceDecomposer(Decomposer):
    """``get_decomposer("splice", backbone, vocabulary=..., l1_penalty=...)``.

    Options: ``vocabulary`` (name, :class:`~interpcore.Vocabulary`, list of words or a text
    file; default: the one the backbone advertises, else ``laion``), ``vocabulary_size``,
    ``templates`` (prompt templates for the concepts), ``l1_penalty`` (0.25), ``solver``
    (``active_set``), ``solver_options``, ``dictionary`` (a ready ``(c, d)`` tensor, then
    ``vocabulary`` names its rows), and the image mean: ``image_mean`` (tensor or file), else
    ``mean_dataset`` (+ ``mean_split``, ``mean_limit``), else SpLiCE's published mean for its
    four backbones, else a file the backbone names in its ``image_mean_file`` attribute, else
    the mean over 2,000 training images of the dataset the backbone advertises as
    ``defaults["image_mean"]``.
    ``decompose(images)`` returns a :class:`SpliceResult`; ``.model`` is the
    :class:`SpliceModel` (the reference API).
    """

    name = "splice"
    requires = (Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER)

    def __init__(self, backbone, *, vocabulary=None, vocabulary_size: int | None = None,
                 l1_penalty: float = DEFAULT_L1, solver: str = "active_set",
                 solver_options: dict | None = None, templates=None, dictionary=None,
                 image_mean=None, mean_dataset=None, mean_split: str = "train",
                 mean_limit: int | None = None, means_folder=None, return_weights: bool = False,
                 return_cosine: bool = False, cache: bool = True, batch_size: int = 64,
                 device=None):
        super().__init__(backbone, vocabulary=vocabulary, l1_penalty=l1_penalty, solver=solver)
        from interpcore import concepts

        check_problem(torch.zeros(1, 1), torch.zeros(1, 1), l1_penalty)
        resolve_solver_name(solver)
        own_dictionary = dictionary is not None
        if vocabulary_size is not None and (not isinstance(vocabulary_size, int) or vocabulary_size < -1
                                            or vocabulary_size == 0 or isinstance(vocabulary_size, bool)):
            raise InterpError("vocabulary_size must be a positive integer (or -1 / None for the whole "
                              f"vocabulary), got {vocabulary_size!r}")
        if vocabulary_size == -1:
            vocabulary_size = None  # the reference's -1: the whole vocabulary
        if vocabulary is None:
            vocabulary = default_vocabulary(backbone)
        vocab = _load_vocabulary(vocabulary, vocabulary_size)
        if len(vocab) == 0:
            raise InterpError(f"vocabulary '{vocab.name}' is empty: SpLiCE needs at least two concepts")
        if dictionary is None:
            dictionary = concepts.concept_dictionary(backbone, vocab, templates=templates, cache=cache)
        mean = resolve_image_mean(backbone, image_mean=image_mean, mean_dataset=mean_dataset,
                                  mean_split=mean_split, mean_limit=mean_limit,
                                  folder=means_folder, cache=cache)
        self.vocabulary = vocab
        self.model = SpliceModel(mean, dictionary, backbone=backbone, solver=solver,
                                 l1_penalty=l1_penalty, return_weights=return_weights,
                                 return_cosine=return_cosine, vocabulary=vocab,
                                 vocabulary_name=vocab.name, solver_options=solver_options,
                                 batch_size=batch_size,
                                 device=device if device is not None else "auto")
        self.model.recipe = _recipe(vocabulary, vocabulary_size, templates, own_dictionary,
                                    image_mean, mean_dataset, mean_split, mean_limit,
                                    means_folder)

    def decompose(self, inputs, *, names=None, **kwargs) -> SpliceResult:
        """Decompose images (paths, PIL images, pixel tensors) or raw embeddings ``(n, d)``."""
        if kwargs:
            raise InterpError(f"unexpected options for splice.decompose: {', '.join(kwargs)}")
        return self.model.explain(inputs, names=names)

    def job_arrays(self, inputs) -> dict:
        """The per-image arrays of a dataset job (:meth:`SpliceModel.job_arrays`)."""
        return self.model.job_arrays(inputs)

    def decompose_dataset(self, data, **kwargs) -> DatasetDecomposition:
        """Mean weights, L0 and cosine over ``data``; a named dataset runs as a resumable
        engine job (``job_dir=``, ``engine=``..., see :func:`decompose_data`)."""
        return decompose_data(self.model, data, **kwargs)

    def decompose_classes(self, data, target_label=None, **kwargs) -> DatasetDecomposition:
        """:meth:`decompose_dataset` per class (or for ``target_label`` only)."""
        return decompose_data(self.model, data, target_label=target_label, by_class=True, **kwargs)


def _recipe(vocabulary, vocabulary_size, templates, own_dictionary: bool, image_mean,
            mean_dataset, mean_split, mean_limit, means_folder) -> dict | None:
    """The decomposer's options as names, from which a worker builds the same model
    (:mod:`interp_splice.engine_job`); ``None`` when something was given as an object (a
    dictionary or image-mean tensor, a Vocabulary object or a word list)."""
    if own_dictionary or not isinstance(vocabulary, (str, os.PathLike)):
        return None
    if image_mean is not None and not isinstance(image_mean, (str, os.PathLike)):
        return None

    def name_or_path(value):  # a file travels as its absolute path: workers' cwd differs
        return str(Path(value).resolve()) if Path(value).is_file() else str(value)

    recipe = {
        "vocabulary": name_or_path(vocabulary), "vocabulary_size": vocabulary_size,
        "templates": templates,
        "image_mean": name_or_path(image_mean) if image_mean is not None else None,
        "mean_dataset": mean_dataset,
        "mean_split": mean_split if mean_dataset is not None else None,
        "mean_limit": mean_limit if mean_dataset is not None else None,
        "means_folder": str(Path(means_folder).resolve()) if means_folder is not None else None,
    }
    return {k: v for k, v in recipe.items() if v is not None}


def _load_vocabulary(vocabulary, size):
    """A Vocabulary from a name, a Vocabulary, a list of words or a text file (the registry's
    rules; for SpLiCE's published vocabularies ``size=k`` keeps the k most frequent words)."""
    from interpcore import get_registry

    return get_registry().get_vocabulary(vocabulary, size=size)
