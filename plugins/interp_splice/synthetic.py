"""Random but CLIP-like SpLiCE problems, for tests and benchmarks.

Real concept dictionaries are not isotropic noise: text embeddings share a large common
direction (removed by SpLiCE's mean-centring), cluster by topic, and come in near-synonym
pairs; centred image embeddings correlate only moderately (0.1 to 0.4) with their best
concepts, so that at SpLiCE's usual penalties the solutions keep roughly 5 to 40 of the
concepts. :func:`synthetic_problem` builds such a dictionary and such embeddings from a seed.
"""

from __future__ import annotations


def synthetic_dictionary(c: int, d: int, *, seed: int = 0, topics: int | None = None):
    """A ``(c, d)`` float32 dictionary with unit, mean-centred rows (SpLiCE's recipe)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    topics = topics or max(8, min(256, c // 40))
    centres = torch.nn.functional.normalize(torch.randn(topics, d, generator=g), dim=1)
    # each concept: a shared direction (as CLIP texts share one), its topic, and its own part
    common = torch.nn.functional.normalize(torch.randn(1, d, generator=g), dim=1)
    topic_of = torch.randint(0, topics, (c,), generator=g)
    strength = 0.4 + 0.5 * torch.rand(c, 1, generator=g)
    own = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=1)
    C = 2.0 * common + strength * centres[topic_of] + 0.8 * own
    # near-synonyms: every 10th concept is a small perturbation of another one
    syn = torch.arange(0, c, 10)
    partner = torch.randint(0, c, (syn.numel(),), generator=g)
    C[syn] = C[partner] + 0.35 * torch.nn.functional.normalize(torch.randn(syn.numel(), d, generator=g), dim=1)
    C = torch.nn.functional.normalize(C, dim=1)
    C = torch.nn.functional.normalize(C - C.mean(0, keepdim=True), dim=1)
    return C.float().contiguous()


def synthetic_embeddings(C, n: int, *, seed: int = 1, active=(3, 20), noise: float = 0.85):
    """``(n, d)`` centred, normalized "image" embeddings: sparse nonnegative mixes of
    concepts plus isotropic noise (``noise`` = share of the norm), as SpLiCE's ``v``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    c, d = C.shape
    lo, hi = active
    V = torch.empty(n, d)
    for i in range(n):
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        j = torch.randperm(c, generator=g)[:k]
        a = torch.rand(k, generator=g) ** 2 + 0.05
        s = torch.nn.functional.normalize(a @ C[j].double().float(), dim=0)
        e = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
        V[i] = (1 - noise) * s + noise * e
    return torch.nn.functional.normalize(V, dim=1)


def synthetic_problem(c: int = 2000, d: int = 128, n: int = 64, *, seed: int = 0, **kwargs):
    """``(dictionary, embeddings)`` for a random CLIP-like SpLiCE problem."""
    C = synthetic_dictionary(c, d, seed=seed)
    return C, synthetic_embeddings(C, n, seed=seed + 1, **kwargs)
