"""TextSpan: a greedy basis of texts for each attention head (Gandelsman et al., Sec. 4).

For one head, let ``X`` (n images x D) be its direct contributions (normalized, from PRS)
and ``T`` (m texts x D) the normalized CLIP embeddings of a text pool.

1. ``V``: the head's top-``rank`` right singular directions (of the uncentred ``X``); the
   texts are projected onto their span (``T <- T V^T V``).
2. ``X`` is centred. Repeatedly: take the text ``t`` whose projections ``X t`` have the
   largest variance over the images; record it and the share of the head's variance it
   removes; remove the direction ``t`` from ``X`` and from every text.
3. The head's reconstruction is its mean plus the removed parts.

Implemented on sufficient statistics: only ``X^T X`` and the mean of each head are read
from the store (a job folder, read shard by shard), in chunks; the variance of the
projections onto ``t`` is ``t^T C t`` with ``C`` the head's covariance in the rank-``rank``
subspace, and removing a direction is ``C <- P C P``, ``T <- T P``. All heads run together
as batched matrix products, so the cost does not grow with the number of images beyond one pass.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import torch

from interpcore import Capability, Explainer, InterpError, Result, Vocabulary
from interpcore.progress import progress

CHUNK = 2048


# --------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------


def head_statistics(heads_iter, K: int, D: int):
    """Mean (K, D), uncentred Gram X^T X (K, D, D) and n from chunks of (b, K, D) arrays."""
    gram = torch.zeros(K, D, D, dtype=torch.float64)
    total = torch.zeros(K, D, dtype=torch.float64)
    n = 0
    for chunk in heads_iter:
        x = torch.as_tensor(np.asarray(chunk), dtype=torch.float64).transpose(0, 1)  # (K, b, D)
        gram += x.transpose(1, 2) @ x
        total += x.sum(1)
        n += x.shape[1]
    if n < 2:
        raise InterpError("TextSpan needs at least two images")
    return total / n, gram, n


@dataclasses.dataclass
class SpanBasis:
    """Per head: chosen text indices (K, iters), explained variance fractions (K, iters),
    reconstruction maps ``R`` (K, D, D) and means (K, D): ``recon = (x - mean) @ R + mean``."""

    indices: torch.Tensor
    explained: torch.Tensor
    R: torch.Tensor
    mean: torch.Tensor
    total_variance: torch.Tensor
    rank: int


#: Eigenvalues of a head's X^T X below this fraction of its largest are numerical noise.
RANK_TOL = 1e-9


def greedy_text_basis(mean, gram, n, texts, iters: int = 10, rank: int | None = None) -> SpanBasis:
    """The greedy TextSpan basis of every head at once (see the module docstring).

    ``mean`` (K, D), ``gram`` (K, D, D) uncentred, ``texts`` (m, D) text embeddings.
    ``rank``: the dimension of the span the texts are projected onto; it never exceeds the
    data's numerical rank (the smallest over the heads), because directions beyond it are
    rounding noise that a 1e-7 perturbation reorders. ``None``: that numerical rank.
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    gram = torch.as_tensor(gram, dtype=torch.float64)
    T = torch.as_tensor(texts, dtype=torch.float64)
    K, D = mean.shape
    if T.dim() != 2 or T.shape[1] != D:
        raise InterpError(f"text embeddings have shape {tuple(T.shape)}; expected (m, {D})")
    m = T.shape[0]
    if m == 0:
        raise InterpError("the text pool is empty")
    # top-rank right singular vectors of X = top eigenvectors of X^T X
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    top = evals[:, -1:].clamp_min(1e-300)
    numerical = int((evals > top * RANK_TOL).sum(-1).min().clamp_min(1))
    rank = numerical if rank is None else int(max(1, min(rank, D, numerical)))
    iters = int(max(1, min(iters, m, rank)))
    V = evecs[:, :, -rank:].flip(-1).transpose(1, 2)  # (K, rank, D), rows orthonormal
    C = (gram - n * mean[:, :, None] * mean[:, None, :]) / max(n - 1, 1)
    total_var = torch.diagonal(C, dim1=1, dim2=2).sum(-1).clamp_min(1e-30)  # (K,)
    Cr = V @ C @ V.transpose(1, 2)  # (K, r, r)
    Tr = torch.einsum("md,krd->kmr", T, V)  # texts in each head's span, (K, m, r)
    eye = torch.eye(rank, dtype=torch.float64).expand(K, rank, rank)
    Q = eye.clone()
    idx_all = torch.empty(K, iters, dtype=torch.long)
    expl = torch.empty(K, iters, dtype=torch.float64)
    ar = torch.arange(K)
    for it in range(iters):
        score = ((Tr @ Cr) * Tr).sum(-1)  # variance of X t over images, (K, m)
        best = score.argmax(-1)
        idx_all[:, it] = best
        t = Tr[ar, best]  # (K, r)
        tn = (t * t).sum(-1).clamp_min(1e-30)
        P = eye - t[:, :, None] * t[:, None, :] / tn[:, None, None]
        before = torch.diagonal(Cr, dim1=1, dim2=2).sum(-1)
        Cr = P @ Cr @ P
        expl[:, it] = (before - torch.diagonal(Cr, dim1=1, dim2=2).sum(-1)) / total_var
        Tr = Tr @ P
        Q = Q @ P
    R = V.transpose(1, 2) @ (eye - Q) @ V  # (K, D, D)
    return SpanBasis(idx_all, expl.clamp_min(0), R, mean, total_var, rank)


def reconstruction_gap(basis: SpanBasis, gram, n: int) -> float:
    """Largest ``|sum(explained) - tr(R^T C R) / tr(C)|`` over the heads: the greedy steps'
    credited shares against the share the final reconstruction map captures (``C``: each
    head's covariance, from its uncentred Gram and mean)."""
    gram = torch.as_tensor(gram, dtype=torch.float64)
    mean = basis.mean.to(torch.float64)
    C = (gram - n * mean[:, :, None] * mean[:, None, :]) / max(n - 1, 1)
    R = basis.R.to(torch.float64)
    captured = ((C @ R) * R).sum((1, 2)) / basis.total_variance
    return float((basis.explained.sum(1) - captured).abs().max())


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class TextSpanResult(Result):
    backbone: str
    pool: str
    n_images: int
    layers: list
    rank: int
    heads: list  # [{"layer", "head", "texts", "explained", "total_explained"}]
    accuracy: dict  # {"all components": %, "earlier layers mean-ablated": %, "heads replaced by texts": %}
    task: str | None = None
    files: list = dataclasses.field(default_factory=list)
    #: largest gap, over the heads, between the variance share the greedy steps credit to the
    #: chosen texts and the share their final reconstruction map captures (see verification)
    reconstruction_gap: float | None = None

    @property
    def verification(self):
        """Each head's chosen texts, credited step by step with the variance they remove, must
        together capture exactly the variance of the head's final reconstruction
        ``(x - mean) R + mean`` (recomputed from ``R`` and the head's covariance)."""
        if self.reconstruction_gap is None:
            return None
        from interpcore import Verification

        return Verification("largest gap between the texts' variance shares and their "
                            "reconstruction's", float(self.reconstruction_gap), 1e-6)

    def figure(self):
        """The first two texts of each head and the share of its variance they explain."""
        from interpcore import figures

        rows = [[f"L{h['layer']}.H{h['head']}", f"{100 * h['total_explained']:.0f}%",
                 h["texts"][0] if h["texts"] else "", h["texts"][1] if len(h["texts"]) > 1 else ""]
                for h in self.heads]
        return figures.table_figure(["head", "explained", "1st text", "2nd text"], rows,
                                    title=f"TextSpan: first texts per head ({self.pool})",
                                    col_width=2.2)

    def head(self, layer: int, head: int) -> dict:
        for h in self.heads:
            if h["layer"] == layer and h["head"] == head:
                return h
        raise InterpError(f"no TextSpan entry for layer {layer}, head {head}")

    def matching_heads(self, pattern: str, top: int = 1) -> list[tuple[int, int]]:
        """(layer, head) pairs whose first ``top`` texts match a regular expression
        (case-insensitive), e.g. ``"grass|water|beach|forest"``."""
        rx = re.compile(pattern, re.IGNORECASE)
        return [(h["layer"], h["head"]) for h in self.heads if any(rx.search(t) for t in h["texts"][:top])]

    def text_report(self) -> str:
        lines = [f"TextSpan of {self.backbone}: text pool '{self.pool}', {self.n_images} images, "
                 f"rank {self.rank}"]
        for h in self.heads:
            lines += ["-" * 40, f"Layer {h['layer']}, Head {h['head']}  "
                      f"(texts explain {100 * h['total_explained']:.1f}% of its variance)", "-" * 40]
            lines += [f"{100 * e:5.1f}%  {t}" for t, e in zip(h["texts"], h["explained"])]
        if self.accuracy:
            lines.append("-" * 40)
            lines += [f"accuracy ({self.task}), {k}: {v:.2f}%" for k, v in self.accuracy.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        out = [f"TextSpan: {self.backbone}, pool '{self.pool}', layers {self.layers}, "
               f"{self.n_images} images"]
        for h in self.heads:
            out.append(f"  L{h['layer']}.H{h['head']:<2} {100 * h['total_explained']:5.1f}%  "
                       + " | ".join(h["texts"][:3]))
        out += [f"  accuracy ({self.task}) {k}: {v:.2f}%" for k, v in self.accuracy.items()]
        return "\n".join(out)

    def write(self, out_dir) -> list[str]:
        """Write ``textspan_heads.txt`` (readable, per head) and ``textspan.json``."""
        from interpcore.cache import write_text

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        txt = write_text(out_dir / "textspan_heads.txt", self.text_report() + "\n")
        js = write_text(out_dir / "textspan.json", self.to_json())
        self.files = [str(txt), str(js)]
        return self.files


# --------------------------------------------------------------------------------------
# The explainer
# --------------------------------------------------------------------------------------


def resolve_pool(pool) -> Vocabulary:
    """A text pool from a Vocabulary, a list of texts, a .txt file or a vocabulary name."""
    import interpcore

    if isinstance(pool, Vocabulary):
        return pool
    if isinstance(pool, (list, tuple)):
        return Vocabulary("custom", [str(t) for t in pool], source="list")
    p = Path(str(pool))
    if p.suffix == ".txt" or p.is_file():
        if not p.is_file():
            raise InterpError(f"text pool file not found: {p}")
        texts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return Vocabulary(p.stem, texts, source=str(p))
    return interpcore.get_vocabulary(str(pool))


#: The paper's general image descriptions: the pool when neither dataset nor backbone names one.
FALLBACK_POOL = "image_descriptions_general"


def default_pool(dataset=None, backbone=None):
    """The text pool used when none is named: the dataset's advertised
    ``defaults["text_pool"]``, else the backbone's, else ``image_descriptions_general``.
    ``dataset``: a Dataset, a PRS store's metadata or ``None``."""
    from interpcore import default_for

    if isinstance(dataset, dict):
        from .tasks import store_dataset

        dataset = store_dataset(dataset)
    return default_for("text_pool", dataset, backbone, fallback=FALLBACK_POOL)


class TextSpanExplainer(Explainer):
    """Label the heads of the last ``layers`` layers with greedy text bases.

    Options: ``pool`` (vocabulary name, file, list or Vocabulary; default: the one the
    dataset, else the backbone, advertises, else ``image_descriptions_general``),
    ``layers`` (int: the last k layers, default 4, or a list), ``texts_per_head`` (10),
    ``rank`` (the dimension of each head's span the texts are projected onto; default and
    maximum: the head dimension, since a head's contributions span at most that many
    directions, and never more than the data's numerical rank; a larger value is clamped
    with a warning).
    """

    name = "textspan"
    requires = (Capability.VIT_RESIDUAL_STREAM, Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER)

    def __init__(self, backbone, *, pool=None, layers=4, texts_per_head: int = 10,
                 rank: int | None = None):
        super().__init__(backbone, pool=pool, layers=layers, texts_per_head=texts_per_head,
                         rank=rank)
        from .decompose import PRSDecomposer, resolve_layers

        self.decomposer = PRSDecomposer(backbone)
        stream = self.decomposer.stream
        L = stream.num_layers
        self.layers = resolve_layers(min(layers, L) if isinstance(layers, int) else layers, L)
        self.pool = pool
        self.texts_per_head = int(texts_per_head)
        if self.texts_per_head < 1:
            raise InterpError("texts_per_head must be at least 1")
        dh = int(stream.head_dim)
        if rank is None:
            rank = dh
        elif int(rank) < 1:
            raise InterpError(f"rank must be at least 1, got {rank}")
        elif int(rank) > dh:
            import warnings

            warnings.warn(f"TextSpan rank {rank} is above the head dimension {dh} of "
                          f"{backbone.name}: a head's contributions span at most {dh} directions "
                          f"and the rest is rounding noise; using rank {dh}", stacklevel=2)
            rank = dh
        self.rank = int(rank)

    def decompose_dataset(self, dataset, *, batch_size: int = 64, limit=None, out=None):
        """The PRS store of ``dataset`` with the heads of the chosen layers (what
        :meth:`explain` reads; the same store as ``get_decomposer("prs").decompose_dataset``)."""
        from .decompose import decompose_dataset

        return decompose_dataset(self.decomposer, dataset, out=out, batch_size=batch_size,
                                 per_patch=False, layers=self.layers, limit=limit,
                                 desc="PRS (TextSpan)")

    def explain(self, inputs=None, *, task=None, templates=None, batch_size: int = 64,
                limit=None) -> TextSpanResult:
        """``inputs``: a dataset, a dataset name or a :class:`PRSStore` whose head layers
        include the chosen layers (default: the dataset the backbone advertises). ``task``:
        zero-shot task name for the accuracy figures (default ``label`` where the dataset has
        class names; ``False`` to skip). ``batch_size`` / ``limit``: for the PRS pass over a
        dataset (a store is read as it is)."""
        import interpcore

        from .decompose import PRSStore

        if inputs is None:
            inputs = interpcore.default_for("dataset", self.backbone)
            if inputs is None:
                raise InterpError(f"backbone '{self.backbone.name}' advertises no default "
                                  "dataset; give one (a name, a Dataset or a PRS store)")
        if isinstance(inputs, str):
            inputs = interpcore.get_dataset(inputs)
        store = inputs if isinstance(inputs, PRSStore) else self.decompose_dataset(
            inputs, batch_size=batch_size, limit=limit)
        missing = [li for li in self.layers if li not in store.head_layers]
        if missing:
            raise InterpError(f"the PRS store has no heads for layers {missing}; it has "
                              f"{store.head_layers}")
        pool = resolve_pool(self.pool if self.pool is not None
                            else default_pool(store.meta, self.backbone))
        return self._explain(store, pool, task=task, templates=templates)

    def _explain(self, store, pool: Vocabulary, *, task=None, templates=None) -> TextSpanResult:
        from interpcore.concepts import text_embeddings

        texts = torch.as_tensor(text_embeddings(self.backbone, pool, device="cpu")).float()
        sel = [store.head_index(li) for li in self.layers]
        H, D, n = store.num_heads, int(store.meta["embed_dim"]), len(store)
        K = len(sel) * H
        heads_arr = store.array("heads")

        def chunks(desc):
            for s in progress(range(0, n, CHUNK), desc=desc, unit="chunk"):
                h = np.asarray(heads_arr[s : s + CHUNK][:, sel], dtype=np.float32)
                if store.meta.get("per_patch"):
                    h = h.sum(3)
                yield h.reshape(h.shape[0], K, D)

        mean, gram, n_img = head_statistics(chunks("TextSpan statistics"), K, D)
        basis = greedy_text_basis(mean, gram, n_img, texts, self.texts_per_head, self.rank)
        heads = []
        for k in range(K):
            li, h = self.layers[k // H], k % H
            ex = [float(e) for e in basis.explained[k]]
            heads.append({"layer": li, "head": h,
                          "texts": [pool.concepts[int(i)] for i in basis.indices[k]],
                          "explained": ex, "total_explained": float(sum(ex))})
        accuracy, task_name = {}, None
        if task is not False:
            accuracy, task_name = self._accuracy(store, basis, sel, task, templates)
        return TextSpanResult(
            backbone=self.backbone.name, pool=pool.name, n_images=n_img, layers=list(self.layers),
            rank=basis.rank, heads=heads, accuracy=accuracy, task=task_name,
            reconstruction_gap=reconstruction_gap(basis, gram, n_img),
        )

    def _accuracy(self, store, basis, sel, task, templates):
        from .tasks import store_dataset, task_weights

        tasks = store_dataset(store.meta).zeroshot_tasks(templates)
        name = task or "label"
        if name not in tasks:
            if task:
                raise InterpError(f"no zero-shot task '{task}' on this dataset; have {', '.join(tasks)}")
            return {}, None
        t = tasks[name]
        labels = t.labels(store.samples)
        keep = np.nonzero(labels >= 0)[0]
        if len(keep) == 0:
            return {}, None
        W = task_weights(self.backbone, t).numpy()
        D = int(store.meta["embed_dim"])
        first = min(self.layers)
        early = [j for j in range(store.num_layers) if j < first]
        attn_mean = np.asarray(store.attn[keep], np.float64).mean(0).astype(np.float32)
        R = basis.R.float().numpy()
        mu = basis.mean.float().numpy()
        heads_arr = store.array("heads")
        correct = np.zeros(3)
        for s in range(0, len(keep), CHUNK):
            rows = keep[s : s + CHUNK]
            attn = np.asarray(store.attn[rows], np.float32)
            base = (np.asarray(store.embed[rows], np.float32) + np.asarray(store.mlps[rows], np.float32).sum(1)
                    + np.asarray(store.ln_bias[rows], np.float32))
            full = base + attn.sum(1)
            abl = attn.copy()
            abl[:, early] = attn_mean[early]
            ablated = base + abl.sum(1)
            h = np.asarray(heads_arr[rows][:, sel], np.float32)
            if store.meta.get("per_patch"):
                h = h.sum(3)
            x = h.reshape(len(rows), -1, D).transpose(1, 0, 2)  # (K, b, D)
            recon = np.einsum("kbd,kde->kbe", x - mu[:, None], R) + mu[:, None]
            # replace the chosen layers' heads (their biases stay) by the reconstructions
            replaced = ablated - x.sum(0) + recon.sum(0)
            y = labels[rows]
            for i, rep in enumerate((full, ablated, replaced)):
                correct[i] += ((rep @ W.T).argmax(-1) == y).sum()
        acc = correct / len(keep) * 100
        names = ["all components", f"layers 0-{first - 1} mean-ablated" if first else "no layer mean-ablated",
                 "and the heads replaced by their texts"]
        return {k: float(v) for k, v in zip(names, acc)}, name


def load_result(path) -> TextSpanResult:
    """Read a ``textspan.json`` written by :meth:`TextSpanResult.write`."""
    p = Path(path)
    if p.is_dir():
        p = p / "textspan.json"
    try:
        d = json.loads(p.read_text())
        return TextSpanResult(**d)
    except FileNotFoundError:
        raise InterpError(f"TextSpan result not found: {p}") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise InterpError(f"{p} is not a TextSpan result ({exc})") from None
