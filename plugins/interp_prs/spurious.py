"""Spurious-feature removal by mean-ablating attention heads (the paper's Section 5.2).

Heads whose direct contributions carry a spurious cue (e.g. the background in Waterbirds)
are replaced by their mean over the dataset; a classifier on the resulting representation
(the zero-shot classifier, or a linear probe trained on the biased training split with the
same heads ablated) is evaluated per group. Reported: the accuracy of every group, the
worst group and the average, before and after.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interpcore import InterpError, Result

CHUNK = 4096


def representation(store, heads=(), means=None, rows=None) -> np.ndarray:
    """The normalized image representation (sum of all contributions) with ``heads``
    ((layer, head) pairs) replaced by ``means`` ((len(heads), D), default: their means on
    this store). ``rows``: image indices (default all)."""
    rows = np.arange(len(store)) if rows is None else np.asarray(rows)
    heads = list(heads)
    if heads and means is None:
        means = head_means(store, heads)
    out = []
    for s in range(0, len(rows), CHUNK):
        r = rows[s : s + CHUNK]
        rep = (np.asarray(store.embed[r], np.float32) + np.asarray(store.attn[r], np.float32).sum(1)
               + np.asarray(store.mlps[r], np.float32).sum(1) + np.asarray(store.ln_bias[r], np.float32))
        if heads:
            x = _heads(store, heads, r)  # (b, k, D)
            rep = rep - x.sum(1) + np.asarray(means).sum(0)
        out.append(rep)
    return np.concatenate(out) if out else np.zeros((0, int(store.meta["embed_dim"])), np.float32)


def _heads(store, heads, rows) -> np.ndarray:
    arr = store.array("heads")
    cols = []
    for li, hi in heads:
        li = li + store.num_layers if li < 0 else li
        j = store.head_index(li)
        if not 0 <= hi < store.num_heads:
            raise InterpError(f"head {hi} does not exist; the model has {store.num_heads} heads")
        h = np.asarray(arr[rows, j, hi], np.float32)
        if store.meta.get("per_patch"):
            h = h.sum(1)
        cols.append(h)
    return np.stack(cols, 1)


def head_means(store, heads, rows=None) -> np.ndarray:
    rows = np.arange(len(store)) if rows is None else np.asarray(rows)
    total = 0.0
    for s in range(0, len(rows), CHUNK):
        total = total + _heads(store, heads, rows[s : s + CHUNK]).astype(np.float64).sum(0)
    return (total / max(len(rows), 1)).astype(np.float32)


def group_accuracy(pred, labels, groups) -> dict:
    out = {}
    for g in sorted(set(int(x) for x in groups if x >= 0)):
        m = groups == g
        out[g] = float((pred[m] == labels[m]).mean() * 100)
    return out


@dataclasses.dataclass
class SpuriousResult(Result):
    backbone: str
    dataset: str
    classifier: str
    heads: list  # ablated (layer, head)
    group_names: list
    before: dict  # {"groups": {name: acc}, "worst": acc, "average": acc}
    after: dict

    def __str__(self) -> str:
        lines = [f"Spurious-feature removal: {self.backbone} on {self.dataset} ({self.classifier})",
                 f"  ablated heads: {', '.join(f'L{li}.H{hi}' for li, hi in self.heads) or 'none'}",
                 f"  {'group':<28} before    after"]
        for g in self.before["groups"]:
            lines.append(f"  {g:<28} {self.before['groups'][g]:6.2f}%  {self.after['groups'][g]:6.2f}%")
        for k in ("worst", "average"):
            lines.append(f"  {k + ' group' if k == 'worst' else 'average':<28} "
                         f"{self.before[k]:6.2f}%  {self.after[k]:6.2f}%")
        return "\n".join(lines)

    def table(self) -> dict:
        rows = [[g, round(self.before["groups"][g], 2), round(self.after["groups"][g], 2)]
                for g in self.before["groups"]]
        rows += [["worst group", round(self.before["worst"], 2), round(self.after["worst"], 2)],
                 ["average", round(self.before["average"], 2), round(self.after["average"], 2)]]
        return {"title": "Accuracy per group (%)", "columns": ["group", "before", "after"], "rows": rows}


def _summary(pred, labels, groups, names) -> dict:
    per = group_accuracy(pred, labels, groups)
    named = {(names[g] if g < len(names) else f"group {g}"): v for g, v in per.items()}
    return {"groups": named, "worst": float(min(per.values())),
            "average": float((pred == labels).mean() * 100)}


def spurious_study(test_store, heads, *, weights=None, train_store=None, backbone: str = "?",
                   max_iter: int = 2000) -> SpuriousResult:
    """Per-group accuracy before / after mean-ablating ``heads``.

    ``weights`` (K, D): a zero-shot classifier; or ``train_store``: a store of the biased
    training split on which a logistic-regression probe is trained (once on the full
    representation, once with the heads ablated, using the training split's head means).
    """
    labels, groups = test_store.labels, test_store.groups
    if (groups < 0).all():
        raise InterpError("the dataset has no groups; use a group-robustness dataset such "
                          "as waterbirds (see 'interp datasets list')")
    names = list(test_store.meta.get("group_names") or [])
    heads = [tuple(int(v) for v in h) for h in heads]
    if weights is not None:
        W = np.asarray(weights, np.float32)
        before = representation(test_store) @ W.T
        after = representation(test_store, heads) @ W.T
        res = [before.argmax(-1), after.argmax(-1)]
        kind = "zero-shot classifier"
    elif train_store is not None:
        from sklearn.linear_model import LogisticRegression

        ytr = train_store.labels
        res = []
        for hs in ([], heads):
            means = head_means(train_store, hs) if hs else None
            Xtr = representation(train_store, hs, means)
            probe = LogisticRegression(max_iter=max_iter, C=1.0).fit(Xtr, ytr)
            res.append(probe.predict(representation(test_store, hs, means)))
        kind = "linear probe on the training split"
    else:
        raise InterpError("give a zero-shot classifier (weights=) or a training store (train_store=)")
    return SpuriousResult(backbone=backbone, dataset=test_store.meta.get("dataset", "?"), classifier=kind,
                          heads=[list(h) for h in heads], group_names=names,
                          before=_summary(res[0], labels, groups, names),
                          after=_summary(res[1], labels, groups, names))


def parse_heads(spec) -> list[tuple[int, int]]:
    """'L.H,L.H' (e.g. '3.1,3.5', negatives ok: '-1.2') -> [(layer, head), ...]."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        return [tuple(int(v) for v in h) for h in spec]
    out = []
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        try:
            li, hi = part.lstrip("L").replace(".H", ".").split(".")
            out.append((int(li), int(hi)))
        except ValueError:
            raise InterpError(f"cannot read head '{part}': write heads as LAYER.HEAD, e.g. 3.1") from None
    return out
