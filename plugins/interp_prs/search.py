"""Nearest-neighbour image search in the space of chosen heads (the paper's Section 5.3).

Each image is represented by the sum of the chosen heads' direct contributions (centred
over the store, so that the shared mean does not dominate) and compared by cosine
similarity. With a colour head, neighbours share the query's colour; with a shape head,
its shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from interpcore import InterpError, Result

from .spurious import _heads


def head_space(store, heads, center: bool = True) -> np.ndarray:
    """(n, D) unit vectors: the chosen heads' summed contributions for every stored image."""
    if not heads:
        raise InterpError("choose at least one head (LAYER.HEAD) to search in")
    x = np.concatenate([_heads(store, heads, np.arange(s, min(len(store), s + 4096))).sum(1)
                        for s in range(0, len(store), 4096)])
    if center:
        x = x - x.mean(0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclasses.dataclass
class SearchResult(Result):
    heads: list
    query: int
    neighbours: list  # [{"index", "similarity", "attributes"?}]
    agreement: dict = dataclasses.field(default_factory=dict)  # attribute -> fraction equal to query's
    figure: str | None = None

    def __str__(self) -> str:
        hs = ", ".join(f"L{li}.H{hi}" for li, hi in self.heads)
        lines = [f"Nearest neighbours of image {self.query} in the space of {hs}"]
        for nb in self.neighbours:
            extra = nb.get("caption") or ""
            lines.append(f"  #{nb['index']:<6} similarity {nb['similarity']:.3f}  {extra}")
        for k, v in self.agreement.items():
            lines.append(f"  neighbours with the query's {k}: {100 * v:.0f}%")
        return "\n".join(lines)


def nearest(store, heads, query: int, k: int = 8, center: bool = True, space=None) -> SearchResult:
    """The ``k`` stored images closest to stored image ``query`` in the heads' space."""
    n = len(store)
    if not 0 <= query < n:
        raise InterpError(f"query index {query} is out of range for {n} stored images")
    x = head_space(store, heads, center) if space is None else space
    sims = x @ x[query]
    sims[query] = -np.inf
    order = np.argsort(-sims)[:k]
    samples = store.samples
    nbs = []
    for i in order:
        d = {"index": int(samples[i].get("index", i)), "row": int(i), "similarity": float(sims[i])}
        if "caption" in samples[i]:
            d["caption"] = samples[i]["caption"]
        if "attributes" in samples[i]:
            d["attributes"] = samples[i]["attributes"]
        nbs.append(d)
    agreement = {}
    q_attr = samples[query].get("attributes") or {}
    for key, val in q_attr.items():
        if isinstance(val, (str, int)):
            same = [nb.get("attributes", {}).get(key) == val for nb in nbs]
            agreement[key] = float(np.mean(same)) if same else 0.0
    return SearchResult(heads=[list(h) for h in heads], query=int(query), neighbours=nbs, agreement=agreement)


def agreement_at_k(store, heads, attribute: str, k: int = 8, queries=None) -> float:
    """Mean fraction of the k nearest neighbours that share the query's ``attribute``."""
    x = head_space(store, heads)
    vals = [(s.get("attributes") or {}).get(attribute) for s in store.samples]
    qs = range(len(store)) if queries is None else queries
    fr = []
    for q in qs:
        if vals[q] is None:
            continue
        sims = x @ x[q]
        sims[q] = -np.inf
        top = np.argsort(-sims)[:k]
        fr.append(np.mean([vals[i] == vals[q] for i in top]))
    if not fr:
        raise InterpError(f"no stored image has the attribute '{attribute}'")
    return float(np.mean(fr))
