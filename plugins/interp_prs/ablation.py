"""Mean-ablation study on a :class:`~interp_prs.decompose.PRSStore` (the paper's Section 3).

Every component's normalized contribution is replaced by its mean over the dataset, and the
zero-shot accuracy of the resulting representation is measured. Rows:

* all components (no ablation);
* MLPs mean-ablated (together with the input-embedding term, as in the paper);
* the class-token-to-itself attention terms mean-ablated (the "direct path" of the class
  token through attention, all layers);
* both;
* attention layers 0..j mean-ablated, cumulatively from the first layer, for every j.

Arrays are read from the store (a job folder, shard by shard) in chunks, so the study runs
on stores larger than RAM.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interpcore import InterpError, Result

CHUNK = 4096


@dataclasses.dataclass
class AblationResult(Result):
    backbone: str
    dataset: str
    task: str
    n_images: int
    rows: list  # [{"ablation": str, "accuracy": float (percent)}]
    cumulative_attention: list  # accuracy after ablating layers 0..j, j = 0..L-1
    files: list = dataclasses.field(default_factory=list)  #: figures written

    def figure(self):
        """Accuracy as attention layers are mean-ablated cumulatively, with the other rows as
        reference lines."""
        from interpcore import figures

        L = len(self.cumulative_attention)
        x = list(range(L + 1))
        base = self.rows[0]["accuracy"]
        series = {
            "attention layers 0..j ablated": [base] + self.cumulative_attention,
            "no ablation": [base] * (L + 1),
            "MLPs ablated": [self.rows[1]["accuracy"]] * (L + 1),
            "class-token terms ablated": [self.rows[2]["accuracy"]] * (L + 1),
        }
        return figures.line_plot(
            x, series, title=f"Mean-ablation: {self.backbone}, task '{self.task}'",
            xlabel="number of attention layers mean-ablated (from the first)",
            ylabel="zero-shot accuracy (%)", dashed=("no ablation",),
        )

    def table(self) -> dict:
        return {"title": "Mean-ablation study", "columns": ["ablation", "accuracy (%)"],
                "rows": [[r["ablation"], round(r["accuracy"], 2)] for r in self.rows]}

    def __str__(self) -> str:
        w = max(len(r["ablation"]) for r in self.rows)
        lines = [f"Mean-ablation study: {self.backbone} on {self.dataset} ({self.n_images} images, "
                 f"zero-shot task '{self.task}')", f"  {'ablation':<{w}}  accuracy"]
        lines += [f"  {r['ablation']:<{w}}  {r['accuracy']:6.2f}%" for r in self.rows]
        return "\n".join(lines)


def _chunks(n):
    for s in range(0, n, CHUNK):
        yield slice(s, min(n, s + CHUNK))


def component_means(store, idx=None) -> dict:
    """Dataset means of the per-image components (normalized), over ``idx`` (default all)."""
    idx = np.arange(len(store)) if idx is None else np.asarray(idx)
    sums = {k: 0.0 for k in ("embed", "attn", "attn_cls", "mlps", "ln_bias")}
    for sl in _chunks(len(idx)):
        rows = idx[sl]
        for k in sums:
            sums[k] = sums[k] + np.asarray(store.array(k)[rows], dtype=np.float64).sum(0)
    return {k: (v / max(len(idx), 1)).astype(np.float32) for k, v in sums.items()}


def _accuracy(rep, W, labels) -> float:
    pred = (rep @ W.T).argmax(-1)
    return float((pred == labels).mean() * 100.0)


def mean_ablation_study(store, weights, labels, *, task: str = "label", backbone: str = "?") -> AblationResult:
    """Run the study; ``weights`` (K, D) zero-shot classifier, ``labels`` (n,) (-1 = skip)."""
    W = np.asarray(weights, dtype=np.float32)
    labels = np.asarray(labels)
    keep = np.nonzero(labels >= 0)[0]
    if len(keep) == 0:
        raise InterpError("no image of the store has a label for this task")
    L = store.num_layers
    means = component_means(store, keep)
    names = ["all components", "MLPs (and input term) mean-ablated",
             "class-token self-attention mean-ablated", "MLPs + class-token terms mean-ablated"]
    names += [f"attention layers 0-{j} mean-ablated" if j else "attention layer 0 mean-ablated"
              for j in range(L)]
    correct = np.zeros(len(names))
    mlp_mean = means["embed"] + means["mlps"].sum(0)
    for sl in _chunks(len(keep)):
        rows = keep[sl]
        y = labels[rows]
        embed = np.asarray(store.embed[rows], np.float32)
        attn = np.asarray(store.attn[rows], np.float32)
        cls = np.asarray(store.attn_cls[rows], np.float32)
        mlps = np.asarray(store.mlps[rows], np.float32)
        lnb = np.asarray(store.ln_bias[rows], np.float32)
        attn_sum, mlp_sum = attn.sum(1), embed + mlps.sum(1)
        no_cls = attn_sum - cls.sum(1) + means["attn_cls"].sum(0)
        reps = [attn_sum + mlp_sum + lnb, attn_sum + mlp_mean + lnb, no_cls + mlp_sum + lnb,
                no_cls + mlp_mean + lnb]
        cum = attn.copy()
        for j in range(L):
            cum[:, j] = means["attn"][j]
            reps.append(cum.sum(1) + mlp_sum + lnb)
        for r_i, rep in enumerate(reps):
            correct[r_i] += ((rep @ W.T).argmax(-1) == y).sum()
    acc = correct / len(keep) * 100.0
    rows = [{"ablation": n, "accuracy": float(a)} for n, a in zip(names, acc)]
    return AblationResult(backbone=backbone, dataset=store.meta.get("dataset", "?"), task=task,
                          n_images=int(len(keep)), rows=rows,
                          cumulative_attention=[float(a) for a in acc[4:]])


def plot_ablation(result: AblationResult, path) -> str:
    """:meth:`AblationResult.figure` saved as PNG; its path is recorded in ``result.files``."""
    from interpcore import figures

    fig = result.figure()
    written = str(figures.save_figure(fig, path)[0])
    result.files = [written]
    return written
