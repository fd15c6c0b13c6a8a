"""The second-order lens on MLP neurons (Gandelsman, Efros and Steinhardt, "Interpreting the
Second-Order Effects of Neurons in CLIP", ICLR 2025).

A neuron ``n`` of the MLP of layer ``l`` writes ``a_n(t) * w_n`` into the residual stream at
each token ``t`` (``a_n`` its activation, ``w_n`` its column of the MLP's output matrix, after
the layer scale). Its *second-order effect* on the image representation is what the later
attention layers carry of it into the class token, through their value path, to the
output::

    phi_n(I) = sum_{m > l} sum_h sum_t  A^{m,h}_{0,t}(I) * a_n(t) / sigma^m_t(I) * E^{m,h}_n / sigma_post(I)

with ``A^{m,h}_{0,t}`` head ``h``'s attention from the class token to token ``t`` in layer
``m``, ``sigma^m_t`` the standard deviation that layer ``m``'s first LayerNorm divides token
``t`` by, and ``E^{m,h}_n`` (image-independent) the neuron's direction put through that
LayerNorm's centring and gain, the head's value and output projections, the layer scale, and
``ln_post``'s centring and gain and ``proj``. LayerNorm scales are taken from the forward
pass (the paper's linearisation); attention patterns are the image's own. The MLPs of later
layers are not followed (they are the neuron's higher-order effects).

Per neuron, over a probe set: the mean effect, the *sparsity* (the fraction of images that
carry 90% of the summed squared effect norms), the *principal direction* (as in the authors'
code: the top singular vector of the centred effects of the 100 images farthest from the mean
effect, signed so that most of them project positively on it) and the
share of the effects' energy along it, and a sparse decomposition of the direction into texts
with the SpLiCE decomposer (taken from the registry). Mean-ablating a set of neurons replaces
their second-order effects by their probe-set means in each image's representation, or (the
neurons' whole contribution) their activations by their per-token means in the forward pass.

Only interpcore's public contract is used: the ViT residual stream with its optional MLP
neuron access (``ViTBlockParts.mlp_hidden`` / ``mlp_out_weight`` / ``mlp_out_bias``), the
text encoder, the registry and :mod:`interpcore.zeroshot`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

import interpcore
from interpcore import Capability, Explainer, InterpError, Result, Verification
from interpcore.data import probe_images

#: share of the summed squared effect norms that the "sparsity" images carry
SPARSITY_SHARE = 0.9
#: what mean-ablation replaces: the second-order effects, or the activations in the forward pass
ABLATIONS = ("second_order", "activation")


def _ln_gain_centred(ln, rows: torch.Tensor) -> torch.Tensor:
    """``g * (r - mean(r))`` for each row of ``rows`` ``(K, width)``, from the LayerNorm
    callable alone: ``ln(u / s) - ln(0) = g * u / s`` for a centred ``u`` of standard deviation
    ``s`` (up to the norm's epsilon against a variance of 1)."""
    u = rows - rows.mean(-1, keepdim=True)
    s = u.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-20)
    zero = ln(torch.zeros(1, 1, rows.shape[-1], dtype=rows.dtype, device=rows.device))[0, 0]
    return (ln((u / s)[None])[0] - zero) * s


def _sigma(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """What a LayerNorm divides each token by: ``sqrt(var + eps)`` (eps unknown for the
    blocks' norms, where it is left out: 1e-5 against variances of order one)."""
    return (x.var(-1, unbiased=False) + eps).sqrt()


class _Lens:
    """The image-independent part: ``E[l][m]`` ``(heads, hidden, embed)`` for each source
    layer ``l`` and later layer ``m``."""

    def __init__(self, stream, layers):
        self.stream = stream
        self.layers = list(layers)
        self.E = {}
        with torch.no_grad():
            for l in self.layers:
                b = stream.block(l)
                w = b.ls_2(b.mlp_out_weight.T[None])[0]  # (hidden, width): each neuron's direction
                self.E[l] = {m: self._through(m, w) for m in range(l + 1, stream.num_layers)}

    def _through(self, m: int, w: torch.Tensor) -> torch.Tensor:
        s = self.stream
        b = s.block(m)
        g = _ln_gain_centred(b.ln_1, w)  # (hidden, width)
        v = b.qkv(g[None])[2][0]  # (heads, hidden, head_dim)
        v0 = b.qkv(torch.zeros(1, 1, w.shape[1], dtype=w.dtype, device=w.device))[2][0]  # bias
        o = b.out_proj_weight.reshape(s.width, s.num_heads, -1)  # (width, heads, head_dim)
        d = b.ls_1(torch.einsum("hkd,whd->hkw", v - v0, o))  # (heads, hidden, width)
        d = (d - d.mean(-1, keepdim=True)) * s.ln_post_weight
        return d if s.proj is None else d @ s.proj


def _forward(stream, pixels, sources, replace=None):
    """One pass of the residual stream recording what the lens needs: the neurons'
    activations of the source layers, every later layer's class-token attention and LayerNorm
    scales, ``ln_post``'s scale of the class token, the representation, and the largest
    relative error of the MLPs split into neurons.

    ``replace``: ``{layer: (neurons, values (T, k))}``, activations set to ``values`` in the
    pass itself (mean-ablation of the neurons' whole contribution, every order)."""
    replace = replace or {}
    x = stream.embed(pixels)
    hidden, attn, sigma, split_err = {}, {}, {}, 0.0
    first = min(sources)
    for i in range(stream.num_layers):
        b = stream.block(i)
        y = b.ln_1(x)
        if i > first:
            q, k, _ = b.qkv(y)
            attn[i] = ((q[:, :, :1] @ k.transpose(-1, -2)) * b.scale).softmax(-1)[:, :, 0]  # (N, heads, T)
            sigma[i] = _sigma(x)
        x = x + b.ls_1(stream.attention(i, y))
        y = b.ln_2(x)
        out = b.mlp(y)
        if i in sources or i in replace:
            h = b.mlp_hidden(y)
            split = h @ b.mlp_out_weight.T + b.mlp_out_bias
            split_err = max(split_err, float((split - out).norm() / out.norm().clamp_min(1e-30)))
            if i in replace:
                idx, values = replace[i]
                h = h.clone()
                h[..., idx] = values.to(h)
                out = h @ b.mlp_out_weight.T + b.mlp_out_bias
            hidden[i] = h
        x = x + b.ls_2(out)
    cls = x[:, 0]
    return hidden, attn, sigma, _sigma(cls, stream.ln_post_eps), stream.post(cls), split_err


def _effects(lens, hidden, attn, sigma, sigma_post, layer, neurons=None):
    """``(N, K, embed)`` second-order effects of ``layer``'s neurons (all, or ``neurons``)."""
    h = hidden[layer] if neurons is None else hidden[layer][..., neurons]
    out = None
    for m, E in lens.E[layer].items():
        s = torch.einsum("nht,ntk->nhk", attn[m], h / sigma[m][..., None])
        e = torch.einsum("nhk,hke->nke", s, E if neurons is None else E[:, neurons])
        out = e if out is None else out + e
    if out is None:  # the last layer: no later attention carries its neurons
        out = torch.zeros(h.shape[0], h.shape[-1], lens.stream.embed_dim, dtype=h.dtype, device=h.device)
    return out / sigma_post[:, None, None]


#: images per neuron whose centred effects give its principal direction (the authors' top_k_pca)
PCA_IMAGES = 100


class _Stats:
    """Running sums over images of each layer's effects ``(n, hidden, embed)``: what the
    means, norms (sparsity) and mean activations need. The principal directions need the
    mean first, so they come from a second pass (:class:`_TopCentred`)."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.sums, self.act_sums = {}, {}
        self.norms = {l: [] for l in self.layers}
        self.n, self.err, self.rep_norm = 0, 0.0, 0.0

    def add(self, effects, hidden, rep, err):
        self.n += rep.shape[0]
        self.err = max(self.err, float(err))
        self.rep_norm += float(rep.float().norm(dim=-1).sum())
        for l in self.layers:
            eff = effects[l].float()
            self.act_sums[l] = self.act_sums.get(l, 0) + hidden[l].sum(0).double().cpu()
            self.sums[l] = self.sums.get(l, 0) + eff.sum(0).double()
            self.norms[l].append(eff.norm(dim=-1))  # (n, hidden)

    def means(self) -> dict:
        return {l: (self.sums[l] / self.n).float() for l in self.layers}

    def finish(self, top: "_TopCentred") -> dict:
        hidden_n, embed = self.sums[self.layers[0]].shape
        out = {k: np.zeros((len(self.layers), hidden_n) + s, dtype=np.float32) for k, s in
               (("mean_norm", ()), ("sparsity", ()), ("energy", ()), ("directions", (embed,)),
                ("mean_effects", (embed,)))}
        for i, l in enumerate(self.layers):
            nm = torch.cat(self.norms[l])  # (N, hidden)
            out["mean_norm"][i] = nm.mean(0).numpy()
            out["sparsity"][i] = _sparsity(nm).numpy()
            out["mean_effects"][i] = (self.sums[l] / self.n).float().numpy()
            out["directions"][i], out["energy"][i] = (t.numpy() for t in top.direction(l))
        out["mean_activations"] = np.stack([(self.act_sums[l] / self.n).float().numpy() for l in self.layers])
        return out


class _TopCentred:
    """Second pass: per neuron, the :data:`PCA_IMAGES` images whose effects lie farthest from
    the neuron's mean effect, and those centred effects. Their top right singular vector is
    the principal direction, signed so that most of them project positively on it, as the
    authors' ``compute_pcas.py`` does."""

    def __init__(self, means: dict, k: int | None = None):
        self.means, self.k = means, int(PCA_IMAGES if k is None else k)
        self.norms, self.effects = {}, {}

    def add(self, effects):
        for l, mean in self.means.items():
            c = effects[l].float() - mean  # (n, hidden, embed)
            nm = c.norm(dim=-1).T  # (hidden, n)
            c = c.transpose(0, 1)  # (hidden, n, embed)
            if l in self.norms:
                nm, c = torch.cat([self.norms[l], nm], 1), torch.cat([self.effects[l], c], 1)
            if nm.shape[1] > self.k:
                nm, idx = nm.topk(self.k, dim=1)
                c = c.gather(1, idx[..., None].expand(-1, -1, c.shape[-1]))
            self.norms[l], self.effects[l] = nm, c

    def direction(self, l):
        """``(directions (hidden, embed), energy (hidden,))``: energy is the share of the
        kept centred effects' squared norm along the direction."""
        c = self.effects[l].double()
        _, sv, vh = torch.linalg.svd(c, full_matrices=False)
        d = vh[:, 0]  # (hidden, embed)
        positive = ((c @ d[..., None])[..., 0] > 0).sum(1)
        d = d * torch.where(positive > c.shape[1] // 2, 1.0, -1.0)[:, None].to(d)
        total = sv.pow(2).sum(-1)
        # a neuron no later attention carries (the last layer's) has no effect at all: no direction
        d = d * (total > 0)[:, None]
        return d.float(), (sv[:, 0].pow(2) / total.clamp_min(1e-300)).float()


# -- results -----------------------------------------------------------------------------


@dataclasses.dataclass
class NeuronsResult(Result):
    """Second-order effects of the MLP neurons of ``layers`` over a probe set.

    Arrays are indexed ``[layer index, neuron]`` (``layers[i]`` is the model's layer):
    ``mean_norm`` (mean effect norm), ``sparsity`` (fraction of images carrying 90% of the
    summed squared norms), ``energy`` (share of the effects' energy along the principal
    direction), ``directions`` / ``mean_effects`` ``(L, hidden, embed)``, ``mean_activations``
    ``(L, tokens, hidden)`` (each token's mean activation, what activation ablation puts in;
    ``None`` in results saved before it existed). ``texts[i][n]``: the sparse text
    decomposition of neuron ``n``'s direction, ``[[text, weight], ...]``.
    """

    backbone: str
    layers: list
    n_images: int
    vocabulary: str
    texts: list
    mean_norm: np.ndarray
    sparsity: np.ndarray
    energy: np.ndarray
    directions: np.ndarray
    mean_effects: np.ndarray
    representation_norm: float  # mean norm of the images' representations, for scale
    mlp_split_error: float
    mean_activations: np.ndarray = None

    @property
    def verification(self):
        return Verification("max relative error of the MLPs split into neurons", self.mlp_split_error, 1e-4)

    def label(self, layer: int, neuron: int) -> str:
        """The first text of a neuron's decomposition ('' when it is empty)."""
        t = self.texts[self.layers.index(layer)][neuron]
        return t[0][0] if t else ""

    def neurons(self):
        """Every ``(layer, neuron)`` pair, layer by layer."""
        return [(l, n) for i, l in enumerate(self.layers) for n in range(len(self.texts[i]))]

    def labelled(self, predicate) -> list[tuple[int, int]]:
        """The ``(layer, neuron)`` pairs whose label satisfies ``predicate(label)``."""
        return [(l, n) for l, n in self.neurons() if (lab := self.label(l, n)) and predicate(lab)]

    def top(self, k: int = 20) -> list[tuple[int, int]]:
        """The ``k`` neurons with the largest mean effect norm."""
        flat = np.asarray(self.mean_norm).ravel()
        hidden = np.asarray(self.mean_norm).shape[1]
        return [(self.layers[i // hidden], i % hidden) for i in np.argsort(-flat, kind="stable")[:k]]

    def __str__(self) -> str:
        mn = np.asarray(self.mean_norm)
        lines = [f"Second-order effects of the MLP neurons of {self.backbone}, layers "
                 f"{', '.join(map(str, self.layers))} ({mn.shape[1]} neurons each, {self.n_images} images; "
                 f"texts from {self.vocabulary})",
                 f"  mean representation norm {self.representation_norm:.3g}; {self.verification}"]
        for i, l in enumerate(self.layers):
            lines.append(f"  layer {l}: mean effect norm {mn[i].mean():.3g} (max {mn[i].max():.3g}); median "
                         f"sparsity {np.median(self.sparsity[i]):.3f}; median energy on the principal "
                         f"direction {np.median(self.energy[i]):.2f}")
        lines.append("  neurons with the largest mean effect:")
        for l, n in self.top(15):
            i = self.layers.index(l)
            texts = ", ".join(f"{t} {w:.2f}" for t, w in self.texts[i][n][:4]) or "(no text)"
            lines.append(f"    L{l}.N{n:<4} norm {mn[i, n]:.3g}  sparsity {self.sparsity[i][n]:.3f}  {texts}")
        return "\n".join(lines)

    def figure(self, k: int = 20):
        """The neurons with the largest mean second-order effect and their first text."""
        from interpcore.figures import bar_chart

        top = self.top(k)
        labels = [f"L{l}.N{n}: {self.label(l, n) or '-'}" for l, n in top]
        values = [float(np.asarray(self.mean_norm)[self.layers.index(l), n]) for l, n in top]
        return bar_chart(labels, values, sort=False, xlabel="mean second-order effect norm",
                         title=f"Neurons of {self.backbone} with the largest second-order effect")


@dataclasses.dataclass
class AblationResult(Result):
    """Zero-shot accuracy (%) per task before and after mean-ablating ``neurons``."""

    backbone: str
    neurons: list  # [[layer, neuron], ...]
    n_images: int
    before: dict
    after: dict
    how: str = "second_order"  # see NeuronsExplainer.ablate

    def change(self, task: str) -> float:
        return self.after[task] - self.before[task]

    def __str__(self) -> str:
        what = "activations" if self.how == "activation" else "second-order effects"
        lines = [f"Mean-ablating the {what} of {len(self.neurons)} neurons of {self.backbone} "
                 f"({self.n_images} images):"]
        for t in self.before:
            lines.append(f"  zero-shot {t:<12} {self.before[t]:6.2f}% -> {self.after[t]:6.2f}% "
                         f"({self.change(t):+.2f})")
        return "\n".join(lines)

    def figure(self):
        from interpcore.figures import compare_bars

        tasks = list(self.before)
        return compare_bars(tasks, {"before": [self.before[t] for t in tasks],
                                    "after ablation": [self.after[t] for t in tasks]},
                            title=f"Zero-shot accuracy, {len(self.neurons)} neurons mean-ablated",
                            xlabel="accuracy (%)")


@dataclasses.dataclass
class NeuronSegmentation(Result):
    """Zero-shot segmentation from neuron activation maps, against the dataset's masks
    (object = mask > 0): IoU of background and object, their mean, and for scale the mean IoU
    of as many neurons drawn at random from the same layers."""

    backbone: str
    dataset: str
    task: str
    layers: list
    k: int
    n_images: int
    iou: dict
    miou: float
    miou_random: float

    def __str__(self) -> str:
        return (f"Neuron-based zero-shot segmentation on {self.dataset} ({self.n_images} images with masks; "
                f"{self.backbone}, the {self.k} neurons of layers {self.layers} projecting most on the predicted "
                f"'{self.task}' class):\n  mIoU {self.miou:.3f} (background {self.iou['background']:.3f}, "
                f"object {self.iou['object']:.3f}); {self.k} random neurons of the same layers: "
                f"{self.miou_random:.3f}")

    def figure(self):
        from interpcore.figures import bar_chart

        return bar_chart(["neurons closest to the class", "random neurons"], [self.miou, self.miou_random],
                         sort=False, xlabel="mean IoU", title=f"Neuron-based segmentation, {self.dataset}")


# -- the method --------------------------------------------------------------------------


class NeuronsExplainer(Explainer):
    """The second-order lens on the MLP neurons of a CLIP ViT.

    ``layers``: source layers (default: every layer but the last, whose neurons no later
    attention carries); ``vocabulary``: texts for the decompositions (name, list or file;
    default the dataset's or backbone's advertised ``vocabulary``); ``l1_penalty``: SpLiCE's
    sparsity penalty; ``texts_per_neuron``: texts kept per neuron.
    """

    name = "neurons"
    requires = (Capability.VIT_RESIDUAL_STREAM, Capability.IMAGE_ENCODER, Capability.TEXT_ENCODER)

    def __init__(self, backbone, *, layers=None, vocabulary=None, l1_penalty=0.1, texts_per_neuron=5,
                 batch_size=64):
        if int(batch_size) < 1:
            raise InterpError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(backbone, layers=layers, vocabulary=vocabulary, l1_penalty=l1_penalty,
                         texts_per_neuron=texts_per_neuron, batch_size=batch_size)
        self.stream = backbone.residual_stream()
        L = self.stream.num_layers
        layers = list(range(L - 1)) if layers is None else [int(l) for l in
                                                            ([layers] if isinstance(layers, int) else layers)]
        bad = [l for l in layers if not 0 <= l < L]
        if bad or not layers:
            raise InterpError(f"layers must be in 0..{L - 1} for {backbone.name}, got {layers}")
        missing = [l for l in layers if self.stream.block(l).mlp_hidden is None]
        if missing:
            raise InterpError(f"the residual stream of {backbone.name} does not expose MLP neurons "
                              f"(ViTBlockParts.mlp_hidden) for layer {missing[0]}")
        self.layers = sorted(set(layers))
        self.l1_penalty, self.texts_per_neuron, self.batch_size = float(l1_penalty), int(texts_per_neuron), int(batch_size)
        self._vocabulary = vocabulary
        self._lens = None
        self._classifiers = {}  # (prompt names, templates) -> zero-shot weights on the CPU

    @property
    def lens(self) -> _Lens:
        if self._lens is None:
            self._lens = _Lens(self.stream, self.layers)
        return self._lens

    def _batches(self, images, replace=None):
        for start in range(0, len(images), self.batch_size):
            pixels = self.backbone.to_pixels(images[start:start + self.batch_size])
            with torch.no_grad():
                yield _forward(self.stream, pixels, self.layers, replace)

    def effects(self, images, layer: int, neurons=None):
        """``(effects (N, K, embed), representations (N, embed))`` for ``layer``'s neurons
        (all, or the indices ``neurons``) on a list of images."""
        if layer not in self.layers:
            raise InterpError(f"layer {layer} is not one of this lens's layers {self.layers}")
        effs, reps = [], []
        for hidden, attn, sigma, sp, rep, _ in self._batches(images):
            effs.append(_effects(self.lens, hidden, attn, sigma, sp, layer, neurons).float().cpu())
            reps.append(rep.float().cpu())
        return torch.cat(effs), torch.cat(reps)

    # -- the verb ------------------------------------------------------------------------
    def explain(self, inputs=None, *, limit=None) -> NeuronsResult:
        """Effects, sparsity, principal directions and their texts over a probe set (a dataset
        name or object, default the backbone's advertised ``dataset``, or a list of images)."""
        dataset, images = probe_images(inputs, self.backbone, limit)
        if len(images) < 2:
            raise InterpError(f"the second-order lens needs at least 2 probe images, got {len(images)}")
        stats = _Stats(self.layers)
        for hidden, attn, sigma, sp, rep, e in self._batches(images):
            stats.add(self._all_effects(hidden, attn, sigma, sp), hidden, rep, e)
        top = _TopCentred(stats.means())
        for hidden, attn, sigma, sp, _, _ in self._batches(images):  # again: the directions need the means
            top.add(self._all_effects(hidden, attn, sigma, sp))
        return self._result(stats, top, dataset)

    def _all_effects(self, hidden, attn, sigma, sp) -> dict:
        return {l: _effects(self.lens, hidden, attn, sigma, sp, l).float().cpu() for l in self.layers}

    def batch_arrays(self, pixels) -> dict:
        """Per-image arrays of a batch of preprocessed ``pixels`` (the verb of a dataset job of
        the engine, see :meth:`explain_job`): ``effects`` ``(n, L, hidden, embed)``,
        ``activations`` ``(n, L, tokens, hidden)``, ``representation`` ``(n, embed)`` and the
        batch's ``mlp_split_error`` on every row."""
        with torch.no_grad():
            hidden, attn, sigma, sp, rep, e = _forward(self.stream, pixels, self.layers)
            effects = torch.stack([_effects(self.lens, hidden, attn, sigma, sp, l) for l in self.layers], 1)
            acts = torch.stack([hidden[l] for l in self.layers], 1)
        n = rep.shape[0]
        return {"effects": effects.float().cpu().numpy(), "activations": acts.float().cpu().numpy(),
                "representation": rep.float().cpu().numpy(), "mlp_split_error": np.full(n, e, dtype=np.float64)}

    def explain_job(self, job_dir, dataset=None) -> NeuronsResult:
        """The result of :meth:`explain` from a finished dataset job whose shards hold
        :meth:`batch_arrays` of this lens's layers, read shard by shard (twice: the principal
        directions need the means first)."""
        from interpcore.engine import iter_shards

        stats = _Stats(self.layers)
        for part in iter_shards(job_dir, ("effects", "activations", "representation", "mlp_split_error"), mmap=True):
            eff, acts = (torch.from_numpy(np.array(part[k])) for k in ("effects", "activations"))  # mmaps are read-only
            if eff.shape[1] != len(self.layers):
                raise InterpError(f"the job in {job_dir} holds {eff.shape[1]} layers, this lens has {len(self.layers)}")
            stats.add({l: eff[:, i] for i, l in enumerate(self.layers)},
                      {l: acts[:, i] for i, l in enumerate(self.layers)},
                      torch.from_numpy(np.array(part["representation"])), float(np.max(part["mlp_split_error"])))
        if stats.n < 2:
            raise InterpError(f"the second-order lens needs at least 2 probe images, the job has {stats.n}")
        top = _TopCentred(stats.means())
        for part in iter_shards(job_dir, ("effects",), mmap=True):
            eff = torch.from_numpy(np.array(part["effects"]))
            top.add({l: eff[:, i] for i, l in enumerate(self.layers)})
        return self._result(stats, top, dataset)

    def _result(self, stats, top, dataset) -> NeuronsResult:
        out = stats.finish(top)
        vocab_name, texts = self._texts(out["directions"], dataset)
        return NeuronsResult(backbone=self.backbone.name, layers=list(self.layers), n_images=stats.n,
                             vocabulary=vocab_name, texts=texts, representation_norm=stats.rep_norm / stats.n,
                             mlp_split_error=stats.err, **out)

    def _texts(self, directions, dataset):
        vocab = self._vocabulary or interpcore.default_for("vocabulary", dataset, self.backbone, fallback="laion")
        # directions are not image embeddings: no image mean is subtracted before decomposing
        splice = interpcore.get_decomposer("splice", self.backbone, vocabulary=vocab, l1_penalty=self.l1_penalty,
                                           image_mean=torch.zeros(self.stream.embed_dim))
        flat = torch.as_tensor(directions).reshape(-1, directions.shape[-1])
        some = (flat != 0).any(-1)  # a zero direction (no effect) has no text
        row = torch.cumsum(some, 0) - 1
        res = splice.decompose(flat[some]) if bool(some.any()) else None
        hidden = directions.shape[1]
        texts = [[[[c, round(float(w), 4)] for c, w in res.top(int(row[i * hidden + k]), self.texts_per_neuron)]
                  if some[i * hidden + k] else [] for k in range(hidden)] for i in range(directions.shape[0])]
        return getattr(res, "vocabulary", str(vocab)) if res is not None else str(vocab), texts

    def find(self, result: NeuronsResult, text: str, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` neurons whose principal direction is closest (cosine) to ``text``'s
        embedding: ``(layer, neuron, cosine)``."""
        t = self.backbone.encode_text([text], normalize=True).float()[0].numpy()
        d = np.asarray(result.directions, dtype=np.float32)
        cos = (d @ t) / np.linalg.norm(d, axis=-1).clip(1e-12)
        order = np.argsort(-cos.ravel(), kind="stable")[:k]
        h = cos.shape[1]
        return [(result.layers[i // h], int(i % h), float(cos.ravel()[i])) for i in order]

    # -- segmentation --------------------------------------------------------------------
    def _classifier(self, prompt_names, templates) -> torch.Tensor:
        """The zero-shot classifier ``(C, embed)`` on the CPU, computed once per task."""
        from interpcore.zeroshot import classifier_weights

        key = (tuple(prompt_names), tuple(templates))
        if key not in self._classifiers:
            self._classifiers[key] = classifier_weights(self.backbone, list(prompt_names),
                                                        list(templates)).float().cpu()
        return self._classifiers[key]

    def segment_options(self, result: NeuronsResult, dataset, *, task=None, k: int = 50, layers=None,
                        seed: int = 0) -> dict:
        """What :meth:`segment_arrays` needs, as JSON values (a dataset job's call options):
        the task, the layers, for each class the ``k`` neurons projecting most on its zero-shot weight
        (``closest``, indices into the layers' neurons) and ``k`` random ones."""
        offered = {} if dataset is None else dataset.zeroshot_tasks()
        task = task or ("label" if "label" in offered else next(iter(offered), None))
        if task not in offered:
            raise InterpError(f"segmentation picks each image's class from a zero-shot task; dataset "
                              f"'{getattr(dataset, 'name', '?')}' has no task '{task}'")
        layers = [result.layers[-1]] if layers is None else [int(l) for l in layers]
        if any(l not in result.layers or l not in self.layers for l in layers) or not 1 <= int(k):
            raise InterpError(f"layers must be among the analysed layers {result.layers} and k >= 1")
        t = offered[task]
        w = self._classifier(t.prompt_names, t.templates)
        d = torch.as_tensor(np.asarray(result.directions)[[result.layers.index(l) for l in layers]]).float()
        n_pairs = d.shape[0] * d.shape[1]
        k = min(int(k), n_pairs)
        # by the size of the projection, either sign, as the authors' compute_segmentation.py does
        closest = (d.reshape(-1, d.shape[-1]) @ w.T).abs().topk(k, dim=0).indices.T  # (C, k) into the pairs
        random = torch.randperm(n_pairs, generator=torch.Generator().manual_seed(seed))[:k]
        return {"task": task, "layers": layers, "k": k, "closest": closest.tolist(), "random": random.tolist(),
                "prompt_names": list(t.prompt_names), "templates": list(t.templates)}

    def segment_arrays(self, pixels, *, layers, closest, random, prompt_names, templates, **_) -> dict:
        """Per image of a batch: the zero-shot ``prediction`` and the patch maps (mean
        activation over the patches) of its class's closest neurons (``text_map``) and of the
        random ones (``random_map``), ``(n, patches)``; the verb of ``segment``'s dataset job."""
        w = self._classifier(prompt_names, templates)
        closest, random = torch.as_tensor(closest), torch.as_tensor(random)
        with torch.no_grad():
            hidden, _, _, _, rep, _ = _forward(self.stream, pixels, self.layers)
        acts = torch.cat([hidden[l][:, 1:] for l in layers], -1).float().cpu()  # (n, patches, pairs)
        pred = (torch.nn.functional.normalize(rep.float().cpu(), dim=-1) @ w.T).argmax(-1)
        maps = {name: torch.stack([acts[j][:, idx].mean(-1) for j, idx in
                                   enumerate(closest[pred] if name == "text_map" else [random] * len(acts))])
                for name in ("text_map", "random_map")}
        return {"prediction": pred.numpy(), **{k: v.numpy() for k, v in maps.items()}}

    def segment_result(self, dataset, options: dict, rows, text_map, random_map) -> NeuronSegmentation:
        """Score the patch maps of the images ``rows`` of ``dataset`` (``text_map[j]`` /
        ``random_map[j]`` for image ``rows[j]``) against their masks."""
        scores = {"text": np.zeros((2, 2)), "random": np.zeros((2, 2))}  # [intersection, union] x [bg, object]
        for j, i in enumerate(rows):
            mask = np.asarray(dataset[i]["mask"]) > 0
            for name, maps in (("text", text_map), ("random", random_map)):
                _add_iou(scores[name], torch.as_tensor(np.asarray(maps[j])), self.stream.grid_size, mask)
        iou = scores["text"][0] / np.maximum(scores["text"][1], 1)
        rnd = scores["random"][0] / np.maximum(scores["random"][1], 1)
        return NeuronSegmentation(backbone=self.backbone.name, dataset=dataset.name, task=options["task"],
                                  layers=options["layers"], k=options["k"], n_images=len(rows),
                                  iou={"background": float(iou[0]), "object": float(iou[1])},
                                  miou=float(iou.mean()), miou_random=float(rnd.mean()))

    @staticmethod
    def masked(dataset, n: int) -> list[int]:
        """The indices below ``n`` of the images of ``dataset`` that have a mask (at least one)."""
        keep = [i for i in range(n) if dataset[i].get("mask") is not None]
        if not keep:
            raise InterpError(f"no image of '{dataset.name}' has a mask to segment against")
        return keep

    def segment(self, result: NeuronsResult, inputs=None, *, task=None, k: int = 50, layers=None, limit=None,
                seed: int = 0) -> NeuronSegmentation:
        """Zero-shot segmentation with the neurons (the paper's recipe as far as the shapes
        world allows): for each image, its zero-shot class of ``task`` (default ``label``, else
        the dataset's first task), the ``k`` neurons of ``layers`` (default: the result's last
        analysed layer) whose principal directions project most (in absolute value) on the
        class's zero-shot weight, the mean of their activations over the patches, upsampled to
        the mask, min-max normalised and thresholded at 0.5; scored against the masks."""
        dataset, images = probe_images(inputs, self.backbone, limit)
        options = self.segment_options(result, dataset, task=task, k=k, layers=layers, seed=seed)
        keep = self.masked(dataset, len(images))
        picked = [images[i] for i in keep]
        parts = [self.segment_arrays(self.backbone.to_pixels(picked[s:s + self.batch_size]), **options)
                 for s in range(0, len(picked), self.batch_size)]
        return self.segment_result(dataset, options, keep, *(np.concatenate([p[k] for p in parts])
                                                             for k in ("text_map", "random_map")))

    # -- mean-ablation -------------------------------------------------------------------
    @staticmethod
    def ablation_tasks(dataset, tasks=None) -> list[str]:
        """The zero-shot tasks to measure (default every one ``dataset`` offers), checked."""
        if dataset is None:
            raise InterpError("ablation measures zero-shot accuracy: give a dataset with zero-shot tasks")
        offered = dataset.zeroshot_tasks()
        names = list(offered) if tasks is None else list(tasks)
        unknown = [t for t in names if t not in offered]
        if unknown:
            raise InterpError(f"no zero-shot task '{unknown[0]}' on dataset '{dataset.name}'; "
                              f"available: {', '.join(offered) or 'none'}")
        return names

    def ablation_options(self, result: NeuronsResult, neurons, how: str = "second_order") -> dict:
        """What :meth:`ablation_arrays` needs, as JSON values (a dataset job's call options):
        ``how``, the neurons by layer and the means that replace them (float32 values, which
        JSON numbers hold exactly)."""
        if how not in ABLATIONS:
            raise InterpError(f"how must be one of {', '.join(ABLATIONS)}, got '{how}'")
        if how == "activation" and result.mean_activations is None:
            raise InterpError("this result has no mean activations (saved by an older version); re-run explain")
        by_layer = {}
        for l, n in sorted({(int(l), int(n)) for l, n in neurons}):
            if l not in result.layers or l not in self.layers:
                raise InterpError(f"layer {l} is not among the analysed layers {result.layers}")
            by_layer.setdefault(l, []).append(n)
        if how == "activation":  # (tokens, k) per layer
            means = {l: np.asarray(result.mean_activations)[result.layers.index(l)][:, ns] for l, ns in by_layer.items()}
        else:  # (k, embed) per layer
            means = {l: np.asarray(result.mean_effects)[result.layers.index(l)][ns] for l, ns in by_layer.items()}
        return {"how": how, "neurons": [[l, ns] for l, ns in by_layer.items()],
                "means": [means[l].astype(np.float32).tolist() for l in by_layer]}

    def ablation_arrays(self, pixels, *, how, neurons, means) -> dict:
        """Per image of a batch: the ``representation`` and the ``ablated`` one (the verb of
        ``ablate``'s dataset job; options from :meth:`ablation_options`)."""
        plan = [(int(l), list(ns), torch.tensor(m, dtype=torch.float32)) for (l, ns), m in zip(neurons, means)]
        with torch.no_grad():
            if how == "activation":
                rep = _forward(self.stream, pixels, self.layers)[4].float().cpu()
                ablated = _forward(self.stream, pixels, self.layers, {l: (ns, m) for l, ns, m in plan})[4]
                ablated = ablated.float().cpu()
            else:
                hidden, attn, sigma, sp, r, _ = _forward(self.stream, pixels, self.layers)
                d = torch.zeros_like(r)
                for l, ns, m in plan:
                    eff = _effects(self.lens, hidden, attn, sigma, sp, l, ns)
                    d = d + (m.to(eff) - eff).sum(1)
                rep = r.float().cpu()
                ablated = rep + d.float().cpu()
        return {"representation": rep.numpy(), "ablated": ablated.numpy()}

    def ablation_result(self, dataset, names, options: dict, rep, ablated) -> AblationResult:
        """Zero-shot accuracies of ``names`` on the first ``len(rep)`` images of ``dataset``
        from the representations before and after ablation."""
        from interpcore.zeroshot import accuracy

        rep, ablated = torch.as_tensor(np.asarray(rep)), torch.as_tensor(np.asarray(ablated))
        samples = [dataset[i] for i in range(len(rep))]
        offered = dataset.zeroshot_tasks()
        before, after = {}, {}
        for name in names:
            t = offered[name]
            y = torch.as_tensor(t.labels(samples))
            keep = y >= 0
            w = self._classifier(t.prompt_names, t.templates)
            before[name] = 100 * float(accuracy(rep[keep], w, y[keep]))
            after[name] = 100 * float(accuracy(ablated[keep], w, y[keep]))
        return AblationResult(backbone=self.backbone.name, n_images=len(rep), before=before, after=after,
                              neurons=[[l, n] for l, ns in options["neurons"] for n in ns], how=options["how"])

    def ablate(self, result: NeuronsResult, neurons, inputs=None, *, limit=None, tasks=None,
               how: str = "second_order") -> AblationResult:
        """Zero-shot accuracy per task of ``inputs``' dataset (default all its tasks) before and
        after mean-ablating ``neurons`` (``(layer, neuron)`` pairs), with the means of
        ``result``'s probe set.

        ``how``: ``"second_order"`` replaces the neurons' second-order effects by their means
        in each representation (the lens's own quantity); ``"activation"`` replaces their
        activations by their per-token means in the forward pass, which removes every order of
        their contribution (direct, through later attention, through later MLPs)."""
        options = self.ablation_options(result, neurons, how)
        dataset, images = probe_images(inputs, self.backbone, limit)
        names = self.ablation_tasks(dataset, tasks)
        parts = [self.ablation_arrays(self.backbone.to_pixels(images[s:s + self.batch_size]), **options)
                 for s in range(0, len(images), self.batch_size)]
        return self.ablation_result(dataset, names, options, *(np.concatenate([p[k] for p in parts])
                                                               for k in ("representation", "ablated")))


def _add_iou(acc: np.ndarray, patch_map: torch.Tensor, grid, mask: np.ndarray) -> None:
    """Add one image's intersections and unions of {background, object} to ``acc`` (2, 2):
    the patch map upsampled to the mask, min-max normalised, thresholded at 0.5 (as the
    authors' compute_segmentation.py does)."""
    up = torch.nn.functional.interpolate(patch_map.reshape(1, 1, *grid), size=mask.shape, mode="bilinear",
                                         align_corners=False)[0, 0]
    up = (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
    pred = (up > 0.5).numpy()
    for c, (p, m) in enumerate(((~pred, ~mask), (pred, mask))):
        acc[0, c] += (p & m).sum()
        acc[1, c] += (p | m).sum()


def _sparsity(norms: torch.Tensor) -> torch.Tensor:
    """Per neuron (column): the fraction of images that carry :data:`SPARSITY_SHARE` of the
    summed squared effect norms (small: a few images carry the effect)."""
    sq = norms.double().pow(2).sort(0, descending=True).values
    cum = sq.cumsum(0) / sq.sum(0).clamp_min(1e-300)
    return ((cum < SPARSITY_SHARE).sum(0) + 1).float() / norms.shape[0]
