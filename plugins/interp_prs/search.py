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


def head_contributions(store, heads, center: bool = True) -> np.ndarray:
    """(n, D): the chosen heads' summed contributions for every stored image, centred over
    the store unless ``center=False``."""
    if not heads:
        raise InterpError("choose at least one head (LAYER.HEAD) to search in")
    x = np.concatenate([_heads(store, heads, np.arange(s, min(len(store), s + 4096))).sum(1)
                        for s in range(0, len(store), 4096)])
    return x - x.mean(0, keepdims=True) if center else x


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def head_space(store, heads, center: bool = True) -> np.ndarray:
    """(n, D) unit vectors: the chosen heads' summed contributions for every stored image."""
    return _unit(head_contributions(store, heads, center))


def top_direction_share(x: np.ndarray) -> float:
    """The share of the (centred) contributions' variance along their first principal
    direction. Near 1 the head writes along one line, and the cosines of all images on the
    query's side of it are close to 1: only their last digits order the neighbours."""
    sv = np.linalg.svd(x - x.mean(0, keepdims=True), compute_uv=False)
    total = float((sv ** 2).sum())
    return float(sv[0] ** 2 / total) if total > 0 else 0.0


def attribute_values(attributes) -> dict:
    """``{name: frozenset of values}`` from a sample's ``attributes``: its scalar entries, and
    the entries of a list of dicts (e.g. one dict per object in the image) under their own
    names (the values of all items), unless a scalar entry of that name exists."""
    out = {}
    for key, val in (attributes or {}).items():
        if isinstance(val, (str, int)) and not isinstance(val, bool):
            out[key] = frozenset([val])
    for key, val in (attributes or {}).items():
        if isinstance(val, (list, tuple)) and val and all(isinstance(v, dict) for v in val):
            merged: dict = {}
            for item in val:
                for sub, v in item.items():
                    if isinstance(v, (str, int)) and not isinstance(v, bool):
                        merged.setdefault(sub, set()).add(v)
            for sub, vs in merged.items():
                out.setdefault(sub, frozenset(vs))
    return out


@dataclasses.dataclass
class SearchResult(Result):
    heads: list
    query: int
    neighbours: list  # [{"index", "similarity", "attributes"?}]
    agreement: dict = dataclasses.field(default_factory=dict)  # attribute -> fraction sharing a query's value
    top_direction_share: float | None = None  # see top_direction_share()
    figure: str | None = None

    def __str__(self) -> str:
        hs = ", ".join(f"L{li}.H{hi}" for li, hi in self.heads)
        lines = [f"Nearest neighbours of image {self.query} in the space of {hs}"]
        for nb in self.neighbours:
            extra = nb.get("caption") or ""
            lines.append(f"  #{nb['index']:<6} similarity {nb['similarity']:.4f}  {extra}")
        for k, v in self.agreement.items():
            lines.append(f"  neighbours sharing a value of the query's {k}: {100 * v:.0f}%")
        if self.top_direction_share is not None:
            lines.append(f"  {100 * self.top_direction_share:.1f}% of the heads' variance lies along one "
                         "direction" + (": cosines near 1 are expected, their order is in the last "
                                        "digits" if self.top_direction_share > 0.8 else ""))
        return "\n".join(lines)


def nearest(store, heads, query: int, k: int = 8, center: bool = True, space=None) -> SearchResult:
    """The ``k`` stored images closest to stored image ``query`` in the heads' space."""
    n = len(store)
    if not 0 <= query < n:
        raise InterpError(f"query index {query} is out of range for {n} stored images")
    share = None
    if space is None:
        raw = head_contributions(store, heads, center)
        share = top_direction_share(raw)
        x = _unit(raw)
    else:
        x = space
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
    q_attr = attribute_values(samples[query].get("attributes"))
    nb_attr = [attribute_values(nb.get("attributes")) for nb in nbs]
    for key, vals in q_attr.items():
        same = [bool(vals & a.get(key, frozenset())) for a in nb_attr]
        agreement[key] = float(np.mean(same)) if same else 0.0
    return SearchResult(heads=[list(h) for h in heads], query=int(query), neighbours=nbs,
                        agreement=agreement, top_direction_share=share)


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
