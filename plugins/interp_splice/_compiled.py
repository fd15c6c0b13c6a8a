"""The per-image steps of the active-set solver, compiled with numba (CPU only).

:class:`interp_splice.solvers.ActiveSetSolver` keeps the one step that is a large matrix
product (every unfinished image's residual times the whole dictionary) in BLAS and hands
each image's share of a round to :func:`solve_round`: choose candidates from the product,
certify the image with the duality gap, or grow its working set and solve the problem on it
exactly. Done in batched torch operations, these steps cost tens of microseconds of fixed
overhead each, thousands of times per batch; compiled, one image's round is a few loops over
its own small arrays. The method and its guarantee are the same (see the docstring of
:mod:`interp_splice.solvers`); only where the work happens changes.

Statuses written per image: :data:`CONTINUE` (its working set was solved: certify it next
round), :data:`DONE` (certified), :data:`NEED_FULL` (its last full product is too stale to
bound the other concepts: compute a fresh one) and :data:`STUCK` (no concept to add yet not
certified, or a factorization failed: the caller solves it with the batched torch path).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

CONTINUE, DONE, NEED_FULL, STUCK = 0, 1, 2, 3
#: reassociation (vectorized dot products) but IEEE infinities and NaNs kept
_FM = {"reassoc", "contract", "nsz", "arcp"}
_NEG = -1e300  # "minus infinity" for maxima


@njit(nogil=True, cache=True, fastmath=_FM)
def _dot(a, b):
    s = 0.0
    for u in range(a.shape[0]):
        s += a[u] * b[u]
    return s


@njit(nogil=True, cache=True, fastmath=_FM)
def _dot32(a, b):
    s = np.float32(0.0)
    for u in range(a.shape[0]):
        s += a[u] * b[u]
    return s


@njit(nogil=True, cache=True, fastmath=True)
def _below(p, thr):
    """The largest of ``p`` that is at most ``thr`` (``_NEG`` if none): one vectorized pass
    (the products are finite, so the full fast-math flags are safe here)."""
    rest = _NEG
    for j in range(p.shape[0]):
        x = np.float64(p[j])
        rest = max(rest, x if x <= thr else _NEG)
    return rest


@njit(nogil=True, cache=True, fastmath=_FM)
def _axpy(a, x, y):
    """``y += a * x``."""
    for u in range(y.shape[0]):
        y[u] += a * x[u]


@njit(nogil=True, cache=True, fastmath=_FM)
def _gram_row(C32, ws, i, G):
    """``G[i, j] = G[j, i] = c_ws[i] . c_ws[j]`` for ``j <= i`` (float32 products), four
    rows ``j`` per pass over ``c_ws[i]`` (each of its loads then feeds four products)."""
    ri = C32[ws[i]]
    j = 0
    while j + 4 <= i + 1:
        r0, r1, r2, r3 = C32[ws[j]], C32[ws[j + 1]], C32[ws[j + 2]], C32[ws[j + 3]]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for u in range(ri.shape[0]):
            x = ri[u]
            a0 += x * r0[u]
            a1 += x * r1[u]
            a2 += x * r2[u]
            a3 += x * r3[u]
        G[i, j], G[i, j + 1], G[i, j + 2], G[i, j + 3] = a0, a1, a2, a3
        j += 4
    while j <= i:
        G[i, j] = _dot32(ri, C32[ws[j]])
        j += 1
    for t in range(i + 1):
        G[t, i] = G[i, t]


@njit(nogil=True, cache=True)
def _top(vals, n, k):
    """Positions of the ``k`` largest of ``vals[:n]``, largest first: a min-heap of the
    best ``k`` so far (most values fail the comparison with its root), sorted at the end."""
    k = min(k, n)
    heap = np.empty(k, dtype=np.int64)
    for t in range(k):  # heapify the first k
        heap[t] = t
    for start in range(k // 2 - 1, -1, -1):
        _sift(vals, heap, start, k)
    for t in range(k, n):
        if vals[t] > vals[heap[0]]:
            heap[0] = t
            _sift(vals, heap, 0, k)
    order = np.argsort(-vals[heap])
    return heap[order]


@njit(nogil=True, cache=True)
def _sift(vals, heap, i, k):
    """Restore the min-heap property below position ``i``."""
    while True:
        lo = i
        a = 2 * i + 1
        if a < k and vals[heap[a]] < vals[heap[lo]]:
            lo = a
        if a + 1 < k and vals[heap[a + 1]] < vals[heap[lo]]:
            lo = a + 1
        if lo == i:
            return
        heap[i], heap[lo] = heap[lo], heap[i]
        i = lo


@njit(nogil=True, cache=True, fastmath=_FM)
def _factor(G, F, m, L):
    """Cholesky factor of ``G[F[:m], F[:m]]`` into ``L``; False if not positive definite."""
    for i in range(m):
        for j in range(i + 1):
            s = G[F[i], F[j]]
            for t in range(j):
                s -= L[i, t] * L[j, t]
            if i == j:
                if not s > 0.0:
                    return False
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    return True


@njit(nogil=True, cache=True, fastmath=_FM)
def _append(G, F, m, L):
    """Extend the factor of ``G[F[:m], F[:m]]`` by the row of ``F[m]``."""
    j = F[m]
    dd = G[j, j]
    for i in range(m):
        s = G[F[i], j]
        for t in range(i):
            s -= L[i, t] * L[m, t]
        s /= L[i, i]
        L[m, i] = s
        dd -= s * s
    if not dd > 1e-14 * G[j, j]:
        return False
    L[m, m] = math.sqrt(dd)
    return True


@njit(nogil=True, cache=True)
def _remove(L, m, k, xv):
    """Delete row and column ``k`` from the ``m x m`` Cholesky factor in ``L``: the rows
    below move up without their column ``k``, whose entries then update the trailing block
    (a rank-one Cholesky update, ``O((m - k)^2)`` instead of a new factorization)."""
    for i in range(k + 1, m):
        for j in range(k):
            L[i - 1, j] = L[i, j]
        xv[i - k - 1] = L[i, k]
        for j in range(k + 1, i + 1):
            L[i - 1, j - 1] = L[i, j]
    n = m - 1 - k
    for i in range(n):
        a = L[k + i, k + i]
        xi = xv[i]
        rr = math.sqrt(a * a + xi * xi)
        c = rr / a
        s = xi / a
        L[k + i, k + i] = rr
        for j in range(i + 1, n):
            L[k + j, k + i] = (L[k + j, k + i] + s * xv[j]) / c
            xv[j] = c * xv[j] - s * L[k + j, k + i]


@njit(nogil=True, cache=True, fastmath=_FM)
def _solve(L, m, rhs, z, out):
    """``out = (L L^T)^{-1} rhs`` for the leading ``m`` entries (``z`` is scratch). Both
    substitutions read ``L`` by rows: the forward one as dot products, the backward one as
    updates of the unsolved entries by each solved one (contiguous, so they vectorize)."""
    for i in range(m):
        s = rhs[i]
        for t in range(i):
            s -= L[i, t] * z[t]
        z[i] = s / L[i, i]
    for i in range(m):
        out[i] = z[i]
    for i in range(m - 1, -1, -1):
        xi = out[i] / L[i, i]
        out[i] = xi
        for t in range(i):
            out[t] -= L[i, t] * xi


@njit(nogil=True, cache=True, fastmath=_FM)
def nnqp_lh(G, q, K, n_warm, x, F, L, max_iter, factored=False):
    """``min w^T G w - 2 q^T w`` s.t. ``w >= 0`` over the first ``K`` entries, by the
    Lawson-Hanson active-set method with a Cholesky factor grown one row per added
    variable. The first ``n_warm`` entries start in the passive set (the previous round's
    support, optimal on its own). On return ``F[:m]`` lists the support, ``x`` holds the
    solution (zero outside the support) and ``L`` the factor of ``G`` on the support; returns
    ``m``, or -1 when a factorization failed."""
    rhs = np.empty(K)
    z = np.empty(K)
    zf = np.empty(K)
    grad = np.empty(K)
    inF = np.zeros(K, dtype=np.bool_)
    qmax = 0.0
    for i in range(K):
        qmax = max(qmax, abs(q[i]))
        if i >= n_warm:
            x[i] = 0.0
    scale = 1e-12 * (1.0 + qmax)
    m = 0
    for i in range(n_warm):
        F[m] = i
        inF[i] = True
        m += 1
    if m and not factored and not _factor(G, F, m, L):
        return -1
    blocked = -1
    for it in range(max_iter):
        # the passive set's solution, stepping back while it leaves the feasible region
        while True:
            for i in range(m):
                rhs[i] = q[F[i]]
            _solve(L, m, rhs, z, zf)
            worst = 1.0
            for i in range(m):
                if zf[i] <= 0.0:
                    xi = x[F[i]]
                    a = xi / (xi - zf[i]) if xi - zf[i] > 0 else 0.0
                    worst = min(worst, a)
            if worst >= 1.0:
                break
            # step to the boundary and drop the variables that reach it, downdating the
            # factor (from the last, so that positions stay valid)
            for i in range(m - 1, -1, -1):
                old = x[F[i]]
                xi = old + worst * (zf[i] - old)
                if xi > 1e-15 * (1.0 + abs(old)):
                    x[F[i]] = xi
                    continue
                x[F[i]] = 0.0
                inF[F[i]] = False
                _remove(L, m, i, z)
                for t in range(i + 1, m):
                    F[t - 1] = F[t]
                m -= 1
            if m == 0:
                break
        for i in range(m):
            x[F[i]] = zf[i]
        # the most negative gradient outside the passive set enters it
        # (the gradient G x - q over all K entries, by rows of the symmetric G: contiguous)
        for i in range(K):
            grad[i] = -q[i]
        for t in range(m):
            xt = x[F[t]]
            row = G[F[t]]
            for i in range(K):
                grad[i] += row[i] * xt
        best = -scale
        j = -1
        for i in range(K):
            if not inF[i] and i != blocked and grad[i] < best:
                best = grad[i]
                j = i
        if j < 0:
            return m
        F[m] = j
        if not _append(G, F, m, L):
            blocked = j  # numerically dependent on the support: leave it out
            continue
        inF[j] = True
        m += 1
    return m


@njit(nogil=True, cache=True)
def solve_round(imgs, fresh, P, C32, C64, gram, use_gram, V, R, Rref, err_ref, Sidx, Sw, Sc, Sn,
                Gs, Ls, Qs, Gok, status, fval, gapv, half, lam, tol, gm, maxnorm, m_add, cheap_limit, n_exact):
    """One round for each image ``b = imgs[i]`` (see the module docstring).

    ``P[b]`` is the image's last full product ``C r_ref`` (float32; fresh this round when
    ``fresh[i]``), ``R[b]`` its exact residual, ``Rref[b]`` / ``err_ref[b]`` the residual of
    that product and its rounding bound; ``Sidx/Sw/Sc/Sn`` the support (indices, weights,
    exact correlations ``c_k . r``, size). ``gm`` is the rounding factor of a float32 dot
    product times the largest concept norm. ``gram`` is the dictionary's float32 Gram
    matrix ``C C^T`` when ``use_gram`` (else the working sets' entries are computed here).
    ``Gs/Ls/Qs`` keep, per image whose support has at most ``gcap`` concepts (``Gok``;
    ``gcap`` is ``Qs``'s width), in packed lower-triangular rows (entry ``(i, j)`` at
    ``i (i + 1) / 2 + j``: an image's few kept rows are contiguous),
    the support's Gram matrix, its Cholesky factor and linear term for the next round.
    """
    c = C64.shape[0]
    kcap = Sidx.shape[1]
    gcap = Qs.shape[1]
    mark = np.zeros(c, dtype=np.bool_)
    E = np.empty(c, dtype=np.int64)
    Ev = np.empty(c)
    for ii in range(imgs.shape[0]):
        b = imgs[ii]
        nS = Sn[b]
        r = R[b]
        v = V[b]
        rr = _dot(r, r)
        rn = math.sqrt(rr)
        err = gm * rn
        if fresh[ii]:
            slack = err
        else:
            dr = 0.0
            for u in range(r.shape[0]):
                t = r[u] - Rref[b, u]
                dr += t * t
            slack = maxnorm * math.sqrt(dr) + err_ref[b]
        thr = (half - slack) - 1e-7 * (abs(half) + slack) - 1e-12
        for k in range(nS):
            mark[Sidx[b, k]] = True
        p = P[b]
        # a stale product with more candidates than the cheap check takes is given up at
        # the first one too many (most rounds after a large step end here)
        cap = c if fresh[ii] else cheap_limit
        nE = 0
        over = False
        for j in range(c):
            if p[j] > thr and not mark[j]:
                if nE == cap:
                    over = True
                    break
                E[nE] = j
                Ev[nE] = p[j]
                nE += 1
        if over:
            status[b] = NEED_FULL
            for k in range(nS):
                mark[Sidx[b, k]] = False
            continue
        rest = _below(p, thr)
        # values of the candidates: exact (float64) where the bound is not enough
        exact = np.zeros(nE, dtype=np.bool_)
        order = np.arange(nE)
        maxE = _NEG
        if not fresh[ii]:
            for t in range(nE):
                Ev[t] = _dot(C64[E[t]], r)
                exact[t] = True
                maxE = max(maxE, Ev[t])
        elif nE > 0:
            order = _top(Ev, nE, min(nE, max(m_add, n_exact) + 1))
            ne = min(n_exact, nE)
            for s in range(ne):
                t = order[s]
                Ev[t] = _dot(C64[E[t]], r)
                exact[t] = True
                maxE = max(maxE, Ev[t])
            if nE > ne:
                maxE = max(maxE, Ev[order[ne]] + err)
        sup_max = _NEG
        wsum = 0.0
        for k in range(nS):
            sup_max = max(sup_max, Sc[b, k])
            wsum += Sw[b, k]
        maxc = max(max(sup_max, maxE), rest + slack)
        f = rr + lam * wsum
        rv = _dot(r, v)
        s_max = half / maxc if maxc > 0 else math.inf
        sc = rv / rr if rr > 0 else 0.0
        sc = min(max(sc, 0.0), s_max)
        gp = max(f - (2 * sc * rv - sc * sc * rr), 0.0)
        fval[b] = f
        gapv[b] = gp
        for k in range(nS):
            mark[Sidx[b, k]] = False
        if gp <= tol * f:
            status[b] = DONE
            continue
        # candidates: concepts that may violate, largest first (exact values first among
        # equals: they come first in ``order`` when fresh)
        cand = np.empty(min(m_add, nE), dtype=np.int64)
        m = 0
        if fresh[ii]:
            for s in range(order.shape[0]):
                if m == cand.shape[0]:
                    break
                t = order[s]
                val = Ev[t] if exact[t] else Ev[t] + err
                if val > half:
                    cand[m] = E[t]
                    m += 1
        else:
            o2 = np.argsort(-Ev[:nE])
            for s in range(nE):
                if m == cand.shape[0]:
                    break
                t = o2[s]
                if Ev[t] > half:
                    cand[m] = E[t]
                    m += 1
        if m == 0:
            status[b] = STUCK if fresh[ii] else NEED_FULL
            continue
        K = nS + m
        ws = np.empty(K, dtype=np.int64)
        for k in range(nS):
            ws[k] = Sidx[b, k]
        for k in range(m):
            ws[nS + k] = cand[k]
        G = np.empty((K, K))
        q = np.empty(K)
        L = np.empty((K, K))
        kept = Gok[b] and nS <= gcap  # the support's Gram entries and factor from last round
        if kept:
            for i in range(nS):
                q[i] = Qs[b, i]
                o = i * (i + 1) // 2
                for j in range(i + 1):
                    G[i, j] = Gs[b, o + j]
                    G[j, i] = G[i, j]
                    L[i, j] = Ls[b, o + j]
        for i in range(nS if kept else 0, K):
            if use_gram:
                gi = gram[ws[i]]
                for j in range(i + 1):
                    G[i, j] = gi[ws[j]]
                    G[j, i] = G[i, j]
            else:
                _gram_row(C32, ws, i, G)
            q[i] = _dot(C64[ws[i]], v) - half
        x = np.empty(K)
        for k in range(nS):
            x[k] = Sw[b, k]
        F = np.empty(K, dtype=np.int64)
        m_sup = nnqp_lh(G, q, K, nS, x, F, L, 3 * K + 30, kept)
        if m_sup < 0 or m_sup > kcap:
            status[b] = STUCK
            continue
        # the support's exact residual and correlations (float64); the Gram matrix was
        # float32, so one step of iterative refinement brings the support's gradient
        # ``c_k . r - l1/2`` from float32 to float64 accuracy
        xs = np.empty(m_sup)
        for k in range(m_sup):
            xs[k] = x[F[k]]
        sc_new = np.empty(m_sup)
        for u in range(r.shape[0]):
            r[u] = v[u]
        for k in range(m_sup):
            _axpy(-xs[k], C64[ws[F[k]]], r)
        for k in range(m_sup):
            sc_new[k] = _dot(C64[ws[F[k]]], r)
        rhs = np.empty(m_sup)
        for k in range(m_sup):
            rhs[k] = sc_new[k] - half
        delta = np.empty(m_sup)
        _solve(L, m_sup, rhs, np.empty(m_sup), delta)
        ok = True
        for k in range(m_sup):
            if not xs[k] + delta[k] > 0.0:
                ok = False
        if ok:
            # the step is of the size of float32 rounding: the residual takes it exactly,
            # the correlations through the (float32) Gram entries, whose error is then
            # float32's times the step's size
            for k in range(m_sup):
                xs[k] += delta[k]
                _axpy(-delta[k], C64[ws[F[k]]], r)
            for k in range(m_sup):
                s = 0.0
                for j in range(m_sup):
                    s += G[F[k], F[j]] * delta[j]
                sc_new[k] -= s
        n_new = m_sup
        for k in range(m_sup):
            Sidx[b, k] = ws[F[k]]
            Sw[b, k] = xs[k]
            Sc[b, k] = sc_new[k]
        Gok[b] = m_sup <= gcap
        if Gok[b]:  # kept for the next round: the support is its working set's first part
            for i in range(m_sup):
                Qs[b, i] = q[F[i]]
                o = i * (i + 1) // 2
                for j in range(i + 1):
                    Gs[b, o + j] = G[F[i], F[j]]
                    Ls[b, o + j] = L[i, j]
        for k in range(n_new, nS):
            Sidx[b, k] = -1
            Sw[b, k] = 0.0
        Sn[b] = n_new
        status[b] = CONTINUE
