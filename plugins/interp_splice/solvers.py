"""Solvers for SpLiCE's sparse nonnegative decomposition.

For a concept dictionary ``C`` of shape ``(c, d)`` (unit rows) and centred, normalized image
embeddings ``v`` (rows of ``V``, shape ``(B, d)``), every solver here minimizes, image by
image::

    f(w) = ||C^T w - v||^2 + l1 * sum(w)      subject to  w >= 0

(no 1/2 factor, as in the reference implementation). The solvers:

``active_set`` (the default)
    A working-set method built for SpLiCE's shape: ``d << c``, a dictionary that stays the
    same across calls, and solutions with a few dozen nonzeros out of thousands. Each round

    1. computes the residual ``r = v - C^T w`` of every unfinished image and checks the
       optimality (KKT) conditions on *all* concepts with ONE batched product
       ``R @ C^T`` (later rounds usually skip even that: see "cheap rounds" below);
    2. derives a duality-gap certificate from it (the stopping rule, below);
    3. adds the most violating concepts to each image's working set and solves the
       problem restricted to the working set exactly, with batched block principal
       pivoting on the small Gram matrices (padded across images; the Gram matrices are
       formed in float32 and solved in float64, and a round that cannot certify redoes
       them in float64). Residuals and support correlations are always exact (float64).

    **Stopping rule.** For any ``theta`` with ``C theta <= l1/2`` (dual feasible),
    ``g(theta) = 2 theta.v - ||theta||^2 <= f(w*)``, so ``gap = f(w) - g(theta)`` bounds
    ``f(w) - f(w*)`` from above. We take ``theta = s r`` with ``s`` the best scale in
    ``[0, l1 / (2 max_j c_j.r)]`` and stop an image when ``gap <= tol * f(w)``. That
    guarantees ``f(w) <= f(w*) / (1 - tol)``: the returned objective is within ``tol``
    (relative, default ``1e-6``) of the optimum. The maximum ``max_j c_j.r`` is made
    rigorous despite float32 products: the largest candidates are recomputed in float64
    and every other concept is bounded by its float32 value plus the worst-case rounding
    error of a length-``d`` dot product (``gamma_{d+2} * ||c_j|| * ||r||``).

    **Cheap rounds.** Once an image has a full product ``C r_ref``, later rounds bound
    ``c_j.r <= c_j.r_ref + ||c_j|| ||r - r_ref||`` (Cauchy-Schwarz) and recompute only
    the few concepts whose bound can reach the threshold; a full product is redone only
    when that set grows large. In practice an image needs about two full products: one to
    choose the working set, one to certify it.

    **Working sets in size groups.** Supports differ a lot between images (a few need 50
    concepts, most 15), so each round sorts the images by working-set size and solves up to
    three groups, each padded to its own largest set, when the padding would cost more than
    a group's fixed cost (its dozens of batched operations). The exact residuals and support
    correlations are, on the CPU, one sparse (CSR) product and one sampled product that read
    only the support rows.

    **Compiled per-image steps (CPU).** For batches of at least ``COMPILED_MIN`` images
    (and ``l1 > 0``), each round's per-image work (choosing candidates from the product,
    the certificate, the working-set solve) runs compiled by numba
    (:mod:`interp_splice._compiled`), one image after another, in ``workers`` threads: a
    Lawson-Hanson active-set solve with a Cholesky factor grown and shrunk one row at a
    time, on a float32 Gram matrix, then one step of float64 iterative refinement on the
    support; a support's Gram matrix and factor are kept for the next round. Only the
    residual-times-dictionary products stay batched: one per round over the images that
    need one, in numpy's BLAS on the transposed dictionary, cut into blocks of concepts for
    the worker threads. The few images it cannot finish (a failed factorization) go through
    the batched torch path below. numba compiles it once per installation (its on-disk
    cache); without numba the torch path runs.

    **Threads.** On the CPU every operation of the batched torch path runs single-threaded (``torch.set_num_threads(1)``
    inside the solve, restored afterwards) and the batch is split into at least one chunk per
    worker thread (``workers``, default torch's thread count; chunks of at least 128 images),
    solved in parallel: the small batched factorizations run several times slower with two
    threads inside each operation than with one, and the operations release the GIL.

``sklearn``
    scikit-learn's ``Lasso(positive=True, fit_intercept=False)`` one image at a time with
    ``alpha = l1 / (2 d)`` (scikit-learn scales the squared error by ``1 / (2 n_samples)``
    and here the samples are the ``d`` embedding dimensions): the reference's default, kept
    for parity checks. Slow (tens of milliseconds per image for 10,000 concepts).

``admm``
    Batched ADMM with the ``(2 C C^T + rho I)^{-1}`` solve done through the Woodbury
    identity on a cached ``d x d`` Cholesky factor (the reference's ADMM factors a
    ``c x c`` matrix). Stops on primal/dual residuals like the reference: no objective
    guarantee; kept as an alternative for GPUs and for comparison.

All solvers return dense weights ``(B, c)`` (float32, on the dictionary's device) and a
:class:`SolveInfo` with per-image objective values and, where the solver has one, the
certified duality gap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
import time
import warnings

import torch

from interpcore.errors import InterpError

SOLVERS = ("active_set", "sklearn", "admm")
DEFAULT_SOLVER = "active_set"
_ALIASES = {"default": "active_set", "active-set": "active_set", "activeset": "active_set",
            "skl": "sklearn", "scikit-learn": "sklearn", "lasso": "sklearn"}


def resolve_solver_name(name: str | None) -> str:
    if name is None:
        return DEFAULT_SOLVER
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SOLVERS:
        from interpcore.errors import close_matches

        near = close_matches(str(name), list(SOLVERS) + list(_ALIASES))
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise InterpError(
            f"unknown SpLiCE solver '{name}'.{hint} Valid solvers: {', '.join(SOLVERS)}."
        )
    return key


@dataclasses.dataclass
class SolveInfo:
    """What a solver reports besides the weights (all per image, float64 on the CPU)."""

    solver: str
    objective: torch.Tensor  #: f(w) = ||C^T w - v||^2 + l1 * sum(w)
    gap: torch.Tensor | None = None  #: certified upper bound on f(w) - f(w*) (active_set)
    converged: torch.Tensor | None = None  #: bool per image
    rounds: int = 0  #: rounds (active_set) or iterations (admm) of the slowest chunk
    full_products: int = 0  #: batched products with the whole dictionary, summed over chunks
    seconds: float = 0.0
    #: embeddings multiplied by the whole dictionary, summed over rounds; divided by the batch
    #: size, the number of full ``batch x concepts x d`` products the solve was worth
    product_rows: int = 0


def objective(dictionary: torch.Tensor, v: torch.Tensor, weights: torch.Tensor, l1_penalty: float):
    """``||C^T w - v||^2 + l1 * sum(w)`` per row, in float64 on the CPU."""
    C = dictionary.detach().double().cpu()
    V = v.detach().double().cpu()
    W = weights.detach().double().cpu()
    if V.dim() == 1:
        V, W = V[None], W[None]
    r = V - W @ C
    return (r * r).sum(1) + float(l1_penalty) * W.sum(1)


def check_problem(dictionary: torch.Tensor, v: torch.Tensor, l1_penalty) -> None:
    """Clear errors for inputs no solver can work with."""
    if not isinstance(dictionary, torch.Tensor) or dictionary.dim() != 2:
        shape = tuple(dictionary.shape) if isinstance(dictionary, torch.Tensor) else type(dictionary).__name__
        raise InterpError(f"the concept dictionary must be a (concepts, dim) tensor, got {shape}")
    if dictionary.shape[0] == 0:
        raise InterpError("the concept dictionary is empty (0 concepts): the vocabulary has no words")
    if not isinstance(v, torch.Tensor) or v.dim() != 2:
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise InterpError(f"embeddings must be a (batch, dim) tensor, got {shape}")
    if v.shape[1] != dictionary.shape[1]:
        raise InterpError(
            f"embeddings have {v.shape[1]} dimensions but the concept dictionary has "
            f"{dictionary.shape[1]}: they come from different models"
        )
    try:
        l1 = float(l1_penalty)
    except (TypeError, ValueError):
        raise InterpError(f"l1_penalty must be a number, got {l1_penalty!r}") from None
    if not math.isfinite(l1) or l1 < 0:
        raise InterpError(f"l1_penalty must be a finite number >= 0, got {l1_penalty!r}")
    if not bool(torch.isfinite(v).all()):
        bad = (~torch.isfinite(v)).any(1).nonzero().flatten().tolist()
        raise InterpError(
            f"embeddings contain NaN or infinite values (rows {bad[:5]}"
            f"{'...' if len(bad) > 5 else ''})"
        )
    if not bool(torch.isfinite(dictionary).all()):
        raise InterpError("the concept dictionary contains NaN or infinite values")


@contextlib.contextmanager
def _full_precision_matmul():
    """Disable TF32 inside the solver: its rounding bound assumes true float32 products."""
    cuda = torch.backends.cuda.matmul
    old_cuda = cuda.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    cuda.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        cuda.allow_tf32 = old_cuda
        torch.backends.cudnn.allow_tf32 = old_cudnn


# the exact support products use CSR tensors, which torch flags as beta once per process
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta",
                        category=UserWarning)

_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 1}


@functools.lru_cache(maxsize=None)
def _openblas():
    """threadpoolctl's handle on the OpenBLAS libraries loaded (numpy's, which the compiled
    path's products use; torch's own threads are set by torch), found once: finding them
    walks the process's loaded libraries."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(internal_api="openblas")


@contextlib.contextmanager
def _single_threaded_ops():
    """``torch.set_num_threads(1)``, and one thread for numpy's BLAS, while any solve is
    inside, restored when the last one leaves (solves may run in several threads at once).
    Yields torch's thread count before."""
    with _THREADS_LOCK:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["blas"] = _openblas().limit(limits=1)
            _THREADS_STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS_STATE["users"] += 1
        threads = _THREADS_STATE["saved"]
    try:
        yield threads
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])
                _THREADS_STATE.pop("blas").restore_original_limits()  # (not torch's MKL)


def _compact(idx: torch.Tensor, keep: torch.Tensor, *vals: torch.Tensor):
    """Move kept entries of each row to the front and drop the all-empty tail columns;
    dropped index entries become -1, dropped values 0 (``-inf`` for float ones that are)."""
    if idx.shape[1] == 0:
        return (idx, *vals)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    keep = torch.gather(keep, 1, order)
    width = int(keep.sum(1).max().item()) if keep.numel() else 0
    keep = keep[:, :width]
    out = [torch.gather(idx, 1, order)[:, :width].masked_fill(~keep, -1)]
    for v in vals:
        g = torch.gather(v, 1, order)[:, :width]
        fill = -math.inf if bool(torch.isneginf(v).any()) else 0.0
        out.append(g.masked_fill(~keep, fill))
    return tuple(out)


# ----------------------------------------------------------------------------------------
# exact small problems: batched block principal pivoting for  min w^T G w - 2 q^T w,  w >= 0
# ----------------------------------------------------------------------------------------


def _solve_on_set(G: torch.Tensor, q: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """Per row, the minimizer of ``w^T G w - 2 q^T w`` with ``w_j = 0`` outside ``F``
    (``G`` already carries the small ridge :func:`nnqp` adds)."""
    Ff = F.to(G.dtype)
    M = G * (Ff[:, :, None] * Ff[:, None, :])
    M.diagonal(dim1=1, dim2=2).add_(1 - Ff)  # identity outside F
    rhs = (q * Ff)[..., None]
    chol, info = torch.linalg.cholesky_ex(M)
    if bool(info.any()):  # numerically singular (near-duplicate concepts): least squares
        z = torch.linalg.lstsq(M, rhs).solution
    else:  # two triangular solves: faster than cholesky_solve
        z = torch.linalg.solve_triangular(chol, rhs, upper=False)
        z = torch.linalg.solve_triangular(chol.mT, z, upper=True)
    return z[..., 0] * Ff


def _bpp(G, q, allowed, F, scale, best, backup, iters: int):
    """The block principal pivoting loop of :func:`nnqp` from the support guess ``F``.

    Rows that have finished keep being solved with their final ``F`` (the same answer each
    time) while most rows still work: per iteration this is a dozen batched operations, and
    the per-operation cost, not the arithmetic, dominates at SpLiCE's sizes. Once at most a
    quarter of the rows work, it continues on those rows only."""
    n, K = q.shape
    ar = torch.arange(K, device=q.device)
    x = torch.zeros_like(q)
    fin = torch.zeros(n, dtype=torch.bool, device=q.device)
    for it in range(iters):
        x = _solve_on_set(G, q, F)
        y = torch.bmm(G, x[..., None])[..., 0] - q
        bad = torch.where(F, x < -scale, allowed & (y < -scale))
        nbad = bad.sum(1)
        fin = nbad == 0
        n_live = n - int(fin.sum())
        if n_live == 0:
            break
        improve = nbad < best
        use_backup = ~improve & (backup <= 0)
        best = torch.minimum(best, nbad)
        backup = torch.where(improve, 3, backup - 1)
        # finished rows have no bad entry, so nothing flips there (last_bad is -1)
        last_bad = torch.where(bad, ar, -1).amax(1)
        F = F ^ torch.where(use_backup[:, None], ar == last_bad[:, None], bad)
        if n > 16 and 4 * n_live <= n and it + 1 < iters:
            L = (~fin).nonzero().flatten()
            wl, fl = _bpp(G[L], q[L], allowed[L], F[L], scale[L], best[L], backup[L],
                          iters - it - 1)
            w = x.clamp_min(0)
            w[L] = wl
            fin[L] = fl
            return w, fin
    return x.clamp_min(0), fin


def nnqp(G: torch.Tensor, q: torch.Tensor, allowed: torch.Tensor, w0: torch.Tensor | None = None,
         *, max_iter: int | None = None, tol: float = 1e-12):
    """Solve ``min_w w^T G w - 2 q^T w`` s.t. ``w >= 0`` and ``w_j = 0`` where not allowed.

    Batched over the leading dimension: ``G`` ``(n, K, K)`` positive definite on the allowed
    entries, ``q`` / ``allowed`` ``(n, K)``. Block principal pivoting (Judice and Pires;
    Kim and Park's NNLS form): guess the support ``F``, solve the equality-constrained
    problem on it, and swap every variable that breaks a KKT condition (a negative value in
    ``F``, a negative gradient outside it) at once; when the number of violations stops
    decreasing for three steps, swap only the last one (the backup rule that makes the
    method finite). It usually ends in a handful of steps, at a point where the gradient
    ``2 (G w - q)`` is zero on the support and nonnegative (to ``tol``) elsewhere.
    ``w0`` gives the first guess of the support (its positive entries plus every allowed
    entry whose gradient at ``w0`` is negative). Returns ``(w, finished)``.
    """
    n, K = q.shape
    dev = q.device
    if K == 0 or n == 0:
        return torch.zeros_like(q), torch.ones(n, dtype=torch.bool, device=dev)
    scale = tol * (1 + q.abs().amax(1, keepdim=True))
    if w0 is None:
        F = allowed & (q > scale)
    else:
        w0 = torch.where(allowed, w0.clamp_min(0), 0.0)
        grad0 = torch.bmm(G, w0[..., None])[..., 0] - q
        F = allowed & ((w0 > 0) | (grad0 < -scale))
    # a tiny ridge keeps the factorizations of near-duplicate concepts' Gram matrices alive
    gd = torch.diagonal(G, dim1=1, dim2=2)
    G = G.clone()
    G.diagonal(dim1=1, dim2=2).add_(1e-13 * gd.abs().amax(1, keepdim=True).clamp_min(1e-30))
    best = torch.full((n,), K + 1, dtype=torch.long, device=dev)
    backup = torch.full((n,), 3, dtype=torch.long, device=dev)
    return _bpp(G, q, allowed, F, scale, best, backup, max_iter or (5 * K + 30))


# ----------------------------------------------------------------------------------------
# the default solver
# ----------------------------------------------------------------------------------------


class ActiveSetSolver:
    """The default SpLiCE solver (see the module docstring for the method and its guarantee).

    Build it once per dictionary and call :meth:`solve` for any number of batches; the
    dictionary is kept on its device in float32 (float64 if given in float64, which makes
    the certificate's rounding term negligible), plus a float64 copy for exact small products
    when it is not too large.

    Parameters
    ----------
    tol: relative objective tolerance, guaranteed by the duality-gap stopping rule.
    first_adds / adds: how many violating concepts may enter a working set in the first /
        a later round (later rounds allow up to twice ``adds`` when supports are large).
    chunk_size: images solved together (one product of ``chunk_size x d`` by ``d x c``);
        default 512 on the CPU, 8192 on a GPU.
    workers: on the CPU, chunks solved in parallel threads (default: ``torch.get_num_threads()``),
        each with single-threaded torch ops; a batch of at least 128 images per worker is split
        so that every worker has a chunk.
    max_rounds: safety cap; an image still uncertified after it is reported in
        ``SolveInfo.converged``.
    cheap_limit: a round skips the full product for an image when at most this many
        concepts can still reach the threshold by the Cauchy-Schwarz bound (default 96 on
        the batched path, 256 on the compiled one).
    gram_cache_mb: the compiled path keeps the dictionary's Gram matrix when it fits in
        this many MiB (default 0: off).
    compiled: ``None`` (default) the compiled CPU path for batches of ``COMPILED_MIN`` or
        more; ``True`` for every CPU batch; ``False`` never.
    """

    def __init__(self, dictionary: torch.Tensor, *, tol: float = 1e-6, first_adds: int = 40,
                 adds: int = 24, chunk_size: int | None = None, max_rounds: int = 60,
                 cheap_limit: int | None = None, keep_float64: bool | None = None,
                 workers: int | None = None, compiled: bool | None = None,
                 gram_cache_mb: float = 0):
        if not isinstance(dictionary, torch.Tensor) or dictionary.dim() != 2 or dictionary.shape[0] == 0:
            check_problem(dictionary, torch.zeros(1, 1), 0.0)
        if not (0 < tol < 1):
            raise InterpError(f"tol must be between 0 and 1, got {tol!r}")
        C = dictionary.detach()
        if C.dtype not in (torch.float32, torch.float64):
            C = C.float()
        if not bool(torch.isfinite(C).all()):
            raise InterpError("the concept dictionary contains NaN or infinite values")
        self.c, self.d = C.shape
        # one zero row appended: padding index -1 gathers it (no masking after a gather);
        # self.C is a view of the first c rows
        self._Cz = torch.cat([C, C.new_zeros(1, self.d)]).contiguous()
        self.C = self._Cz[: self.c]
        self.device = self.C.device
        if keep_float64 is None:
            keep_float64 = self.c * self.d <= 64_000_000
        self._Cz64 = None
        if keep_float64 or self.C.dtype == torch.float64:
            self._Cz64 = self._Cz if self._Cz.dtype == torch.float64 else self._Cz.double()
        self.C64 = self._Cz64[: self.c] if self._Cz64 is not None else None
        self.tol = float(tol)
        self.first_adds = int(first_adds)
        self.adds = int(adds)
        # the compiled path's exact recomputations cost less than the batched path's, so it
        # affords more of them before a full product (measured: fewer full products at 256)
        self.cheap_limit = 96 if cheap_limit is None else int(cheap_limit)
        self.cheap_limit_compiled = 256 if cheap_limit is None else int(cheap_limit)
        self.max_rounds = int(max_rounds)
        if chunk_size is None:
            chunk_size = 8192 if self.device.type == "cuda" else 512
        self.chunk_size = int(chunk_size)
        self.workers = workers  # CPU threads solving chunks in parallel (default: torch's)
        self.compiled = compiled  # None: the compiled CPU path for batches of COMPILED_MIN+
        self._np = None  # numpy views of the dictionary for the compiled path
        self.gram_cache_mb = float(gram_cache_mb)
        self._gram_np = None
        self.maxnorm = float(self.C.double().norm(dim=1).max().item())
        k = self.d + 2
        # worst-case relative rounding of a length-d dot product in the dictionary's dtype,
        # and in float32 (the compiled path's products are float32 whatever the dtype)
        self.gamma, self.gamma32 = (k * u / (1 - k * u) for u in
                                    (torch.finfo(self.C.dtype).eps / 2, 2.0 ** -24))
        self.trace: list | None = None  # set to a list to record per-round statistics

    # -- public ---------------------------------------------------------------------------
    def solve(self, v: torch.Tensor, l1_penalty: float, *, return_info: bool = True):
        """Weights ``(B, c)`` (float32) for the rows of ``v``, and a :class:`SolveInfo`."""
        if self.device.type != "cpu":
            W, info = self._solve(v, l1_penalty, torch.get_num_threads())
            return (W, info) if return_info else W
        # on the CPU every torch operation of the solve, checks and allocations included, runs
        # single-threaded: small operations with two threads wait for each other, and far
        # longer when the cores are shared; parallelism comes from worker threads instead
        with _single_threaded_ops() as threads:
            W, info = self._solve(v, l1_penalty, threads)
        return (W, info) if return_info else W

    def _solve(self, v, l1_penalty, threads: int):
        check_problem(self.C[:1], v, l1_penalty)
        t0 = time.perf_counter()
        lam = float(l1_penalty)
        V = v.detach().to(self.device, torch.float64)
        B = V.shape[0]
        W = torch.zeros(B, self.c, dtype=torch.float32, device=self.device)
        f = torch.zeros(B, dtype=torch.float64)
        gap = torch.zeros(B, dtype=torch.float64)
        conv = torch.zeros(B, dtype=torch.bool)
        stats = {"rounds": 0, "full": 0, "rows": 0}
        lock = threading.Lock()

        pool, workers = None, 1

        def run(span, compiled: bool = False) -> None:
            s, e = span
            with torch.no_grad():
                if compiled:
                    idx, val, fc, gc, cc, rc, nf, nr = self._solve_compiled(V[s:e], lam, pool,
                                                                            workers)
                else:
                    idx, val, fc, gc, cc, rc, nf, nr = self._solve_chunk(V[s:e], lam)
            if idx.shape[1]:
                ok = idx >= 0
                rows = torch.arange(e - s, device=self.device)[:, None].expand_as(idx)
                W[s:e][rows[ok], idx[ok]] = val[ok].float()
            f[s:e], gap[s:e], conv[s:e] = fc.cpu(), gc.cpu(), cc.cpu()
            with lock:
                stats["rounds"] = max(stats["rounds"], rc)
                stats["full"] += nf
                stats["rows"] += nr

        from concurrent.futures import ThreadPoolExecutor

        if self._compiled_ok(B, lam):
            # the products and the per-image steps are cut into pieces that the worker
            # threads take as they come free, so a core shared with another process slows
            # the solve by at most its share (equal halves would wait for the slower core)
            workers = max(1, min(self.workers or threads, B // 32))
            pool = ThreadPoolExecutor(workers) if workers > 1 else None
            try:
                for s in range(0, B, self.COMPILED_CHUNK):
                    run((s, min(B, s + self.COMPILED_CHUNK)), compiled=True)
            finally:
                if pool is not None:
                    pool.shutdown()
        else:
            spans = self._spans(B)
            with _full_precision_matmul():
                # CPU: chunks run in parallel threads (a batch is split into at least one chunk
                # per worker). Most of the work is in small batched ops (Cholesky factors of
                # 60 x 60, gathers) that run several times slower with two threads inside each
                # op than with one; they release the GIL, so whole chunks in parallel use the
                # cores well.
                workers = min(self.workers or threads, len(spans)) if self.device.type == "cpu" else 1
                if workers > 1:
                    with ThreadPoolExecutor(workers) as pool:
                        list(pool.map(run, spans))
                else:
                    for sp in spans:
                        run(sp)
        info = SolveInfo("active_set", f, gap, conv, stats["rounds"], stats["full"],
                         time.perf_counter() - t0, stats["rows"])
        return W, info

    __call__ = solve

    # -- internals --------------------------------------------------------------------------
    #: on the CPU, the smallest chunk a batch is split into for the workers: below it the
    #: per-operation overhead (the same for 64 images as for 128) outweighs the second core,
    #: and a split 128-image batch measured slower with two workers than with one
    MIN_CHUNK = 128
    GROUP_MIN = 48  #: working sets of at least this many images may be solved in size groups
    GROUP_COST = 4_000_000  #: the fixed cost of a group, in units of one K^3 factorization step

    def _spans(self, B: int) -> list[tuple[int, int]]:
        """``(start, end)`` of each chunk: at most ``chunk_size`` images, and on the CPU at
        least one chunk per worker thread when the batch has ``MIN_CHUNK`` images each."""
        n = -(-B // self.chunk_size)
        if self.device.type == "cpu":
            workers = self.workers or torch.get_num_threads()
            n = max(n, min(workers, B // self.MIN_CHUNK))
        n = max(1, min(n, B))
        bounds = [round(i * B / n) for i in range(n + 1)]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]

    def _rows(self, src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        flat = torch.where(idx >= 0, idx, self.c).reshape(-1)
        return src.index_select(0, flat).view(*idx.shape, self.d)

    def _gather64(self, idx: torch.Tensor) -> torch.Tensor:
        """Dictionary rows for an index tensor (any shape; -1 = padding -> zero row), float64."""
        if self._Cz64 is not None:
            return self._rows(self._Cz64, idx)
        return self._rows(self._Cz, idx).double()

    def _gather32(self, idx: torch.Tensor) -> torch.Tensor:
        """Dictionary rows in the dictionary's own dtype (-1 = padding -> zero row)."""
        return self._rows(self._Cz, idx)

    def _support_products(self, idx: torch.Tensor, w: torch.Tensor, V: torch.Tensor):
        """Exact (float64) residuals ``V - sum_k w_k c_k`` and support correlations
        ``c_k . r`` (``-inf`` at padding) for supports ``idx`` (-1 = padding), weights ``w``.

        On the CPU as a sparse (CSR) product and a sampled product, which read only the
        support rows: a padded (n, K, d) float64 gather costs several times more there."""
        ninf = -math.inf
        if self.device.type == "cpu" and self.C64 is not None and idx.numel():
            keep = idx >= 0
            counts = keep.sum(1)
            crow = torch.zeros(idx.shape[0] + 1, dtype=torch.long)
            torch.cumsum(counts, 0, out=crow[1:])
            cols = idx[keep]
            Ws = torch.sparse_csr_tensor(crow, cols, w[keep], size=(idx.shape[0], self.c),
                                         check_invariants=False)
            r = V - Ws @ self.C64
            mask = torch.sparse_csr_tensor(crow, cols, torch.zeros_like(w[keep]),
                                           size=Ws.shape, check_invariants=False)
            vals = torch.sparse.sampled_addmm(mask, r, self.C64.T).values()
            sc = torch.full(idx.shape, ninf, dtype=torch.float64)
            sc[keep] = vals
            return r, sc
        atoms = self._gather64(idx)
        r = V - torch.bmm(w[:, None, :], atoms)[:, 0]
        sc = torch.bmm(atoms, r[:, :, None])[..., 0].masked_fill_(idx < 0, ninf)
        return r, sc

    @staticmethod
    def _select(vals: torch.Tensor, thr: torch.Tensor, cap: int):
        """Per row, the indices of the entries of ``vals`` above ``thr`` (padded with -1),
        their values, and an upper bound ``rest`` on every entry left out. At most ``cap``
        entries per row are kept (the largest); beyond that ``rest`` is the next value."""
        n, c = vals.shape
        # 0/1 in the values' dtype (a - t > 0 exactly when a > t in IEEE arithmetic): summing
        # floats is several times faster on the CPU than summing a bool mask
        mask = (vals - thr.to(vals.dtype)[:, None]).gt_(0)
        counts = mask.sum(1).long()
        top = int(counts.max().item()) if n else 0
        if top <= cap:
            nz = mask.nonzero()
            rows, cols = nz[:, 0], nz[:, 1]
            starts = torch.cumsum(counts, 0) - counts
            pos = torch.arange(rows.numel(), device=vals.device) - starts[rows]
            idx = torch.full((n, max(top, 1)), -1, dtype=torch.long, device=vals.device)
            idx[rows, pos] = cols
            v = torch.full(idx.shape, -math.inf, dtype=vals.dtype, device=vals.device)
            v[rows, pos] = vals[rows, cols]
            return idx, v, thr.double()
        k = min(cap, c)
        if k < c:
            tv, ti = vals.topk(k + 1, dim=1)
            return ti[:, :k], tv[:, :k], torch.maximum(tv[:, k].double(), thr.double())
        tv, ti = vals.sort(1, descending=True)
        return ti, tv, torch.full((n,), -math.inf, dtype=torch.float64, device=vals.device)

    def _solve_working_sets(self, rows, ws_idx, ws_w, V, half, exact_gram):
        """Solve each row's problem restricted to its working set ``ws_idx`` (-1 = padding),
        warm-started at ``ws_w``; yields ``(rows, support, weights, residuals, support
        correlations)`` per group of rows.

        Working sets differ a lot in size (a few images need 50 concepts, most 20), so the
        rows are sorted by size and solved in up to three groups, each padded only to its own
        largest set: the Gram products cost ``K^2`` and the factorizations ``K^3`` per row,
        against a fixed cost per group (``GROUP_COST``) for its batched operations."""
        f64 = torch.float64
        allowed = ws_idx >= 0
        cnt = allowed.sum(1)
        n = rows.numel()
        groups = [torch.arange(n, device=rows.device)]
        if n >= self.GROUP_MIN:
            order = torch.argsort(cnt, stable=True)
            sizes = cnt[order].tolist()
            # per group, ~n K^3 for the factorizations plus a fixed cost for its dozens of
            # batched operations: split only where the padding costs more than that
            best = None
            for cuts in ([0, n], [0, n // 2, n], [0, n // 2, (n * 7) // 8, n]):
                cost = sum((b - a) * sizes[b - 1] ** 3 + self.GROUP_COST
                           for a, b in zip(cuts, cuts[1:]) if b > a)
                if best is None or cost < best[0]:
                    best = (cost, cuts)
            cuts = best[1]
            groups = [order[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
        for g in groups:
            gi, gw = _compact(ws_idx[g], allowed[g], ws_w[g])
            g_rows = rows[g]
            Vg = V[g_rows]
            ok = gi >= 0
            if exact_gram or self.C.dtype == f64:
                atoms = self._gather64(gi)  # (n, K', d)
                G = torch.bmm(atoms, atoms.transpose(1, 2))
                q = torch.bmm(atoms, Vg[:, :, None])[..., 0]
            else:
                # float32 Gram matrix and correlations: the subproblem is then solved to
                # float32 accuracy (~1e-7); the residual and the certificate are exact, and
                # a round that cannot certify switches to float64 (exact_gram)
                a32 = self._gather32(gi)
                G = torch.bmm(a32, a32.transpose(1, 2)).double()
                q = torch.bmm(a32, Vg[:, :, None].to(a32.dtype))[..., 0].double()
                del a32
            q = (q - half).masked_fill_(~ok, 0.0)
            G = G.masked_fill_(~(ok[:, :, None] & ok[:, None, :]), 0.0)
            G.diagonal(dim1=1, dim2=2).add_((~ok).to(f64))
            new_w, _ = nnqp(G, q, ok, gw)
            new_idx, new_w = _compact(gi, (new_w > 0) & ok, new_w)
            new_r, new_sc = self._support_products(new_idx, new_w, Vg)
            yield g_rows, new_idx, new_w, new_r, new_sc

    #: the compiled path (``_compiled.py``) for CPU batches of at least this many images
    #: (below it, the one-time compilation would outweigh the solve of a few images), and
    #: the images it solves together (one residual-times-dictionary product per round)
    COMPILED_MIN = 32
    COMPILED_CHUNK = 512
    #: supports of up to this many concepts keep their Gram matrix and Cholesky factor from
    #: one round to the next (``2 * KEEP_GRAM^2`` float64 per image of a chunk)
    KEEP_GRAM = 160

    def _compiled_ok(self, B: int, lam: float) -> bool:
        if self.compiled is False or self.device.type != "cpu" or lam <= 0 or self.C64 is None:
            return False
        if self.compiled is None and B < self.COMPILED_MIN:
            return False
        try:
            from . import _compiled  # noqa: F401
        except ImportError:  # numba absent: the batched torch path
            return False
        return True

    def _gram(self):
        """The dictionary's float32 Gram matrix ``C C^T`` for the compiled path, built once
        (one product with all threads) when it fits in ``gram_cache_mb``; an empty array
        otherwise (the compiled steps then compute their working sets' entries)."""
        import numpy as np

        if self._gram_np is None:
            if self.c * self.c * 4 > self.gram_cache_mb * 2**20:
                self._gram_np = np.zeros((0, 0), dtype=np.float32)
            else:
                C32 = torch.from_numpy(self._np[0])
                self._gram_np = (C32 @ C32.T).numpy()
        return self._gram_np

    def _solve_compiled(self, V: torch.Tensor, lam: float, pool=None, workers: int = 1):
        """:meth:`_solve_chunk`'s rounds with the per-image work compiled (``_compiled.py``):
        the residual-times-dictionary products stay BLAS products (numpy's), one per round
        over the images that need one, cut into blocks of concepts; ``pool`` (``workers``
        threads) takes the blocks and the pieces of the per-image work. Images the compiled steps
        cannot finish go through :meth:`_solve_chunk`."""
        import numpy as np

        from . import _compiled as K

        if self._np is None:
            C32 = np.ascontiguousarray(self.C.float().numpy())
            # the exact (float64) dot products read a float32 dictionary's own rows: their
            # float64 copy holds the same values at twice the memory traffic, and the
            # compiled steps are bound by memory, not arithmetic
            exact = C32 if self.C.dtype == torch.float32 else np.ascontiguousarray(self.C64.numpy())
            # the products read the dictionary transposed (d x c, contiguous) with numpy's
            # OpenBLAS, measured 1.4-1.55x faster than torch's products here (bench_splice.py)
            self._np = (C32, exact, np.ascontiguousarray(C32.T))
        C32, C64, CT = self._np
        gram = self._gram()
        Vn = np.ascontiguousarray(V.double().numpy())
        b, d = Vn.shape
        half = lam / 2
        kcap = min(self.c, d + 8)
        R = Vn.copy()
        Rref = np.zeros_like(Vn)
        err_ref = np.zeros(b)
        Sidx = np.full((b, kcap), -1, dtype=np.int64)
        Sw = np.zeros((b, kcap))
        Sc = np.zeros((b, kcap))
        Sn = np.zeros(b, dtype=np.int64)
        gcap = min(kcap, self.KEEP_GRAM)
        # the kept Gram entries and factors as packed triangles (an image's rows contiguous)
        Gs = np.empty((b, gcap * (gcap + 1) // 2))
        Ls = np.empty_like(Gs)
        P = np.empty((b, self.c), dtype=np.float32)
        Qs = np.empty((b, gcap))
        Gok = np.zeros(b, dtype=bool)
        status = np.zeros(b, dtype=np.int8)
        fval = np.full(b, np.inf)
        gapv = np.full(b, np.inf)
        has_ref = np.zeros(b, dtype=bool)
        # the products below are float32 whatever the dictionary's dtype: their rounding bound
        gm = self.gamma32 * self.maxnorm
        n_full = n_rows = 0
        stuck: list = []

        def pieces(n: int, least: int) -> list[tuple[int, int]]:
            """``(start, end)`` of about four pieces per worker, each of ``least`` or more."""
            k = max(1, min(4 * workers, n // least)) if workers > 1 else 1
            cuts = np.linspace(0, n, k + 1).astype(int)
            return [(a, e) for a, e in zip(cuts[:-1], cuts[1:]) if e > a]

        def spread(fn, spans) -> None:
            if pool is None or len(spans) == 1:
                for sp in spans:
                    fn(sp)
            else:
                list(pool.map(fn, spans))

        def full(rows):
            # the residuals times the dictionary, in blocks of concepts over the worker
            # threads (blocks of rows would make small, inefficient products)
            nonlocal n_full, n_rows
            R32 = R[rows].astype(np.float32)
            consecutive = int(rows[-1]) - int(rows[0]) == len(rows) - 1
            target = P[int(rows[0]):int(rows[-1]) + 1] if consecutive else None

            def block(span):
                j0, j1 = span
                if target is not None:
                    np.matmul(R32, CT[:, j0:j1], out=target[:, j0:j1])
                else:
                    P[rows, j0:j1] = R32 @ CT[:, j0:j1]

            spread(block, pieces(self.c, 512))
            Rref[rows] = R[rows]
            err_ref[rows] = gm * np.linalg.norm(R[rows], axis=1)
            has_ref[rows] = True
            n_full += 1
            n_rows += len(rows)

        def kernel(rows, fresh, m_add):
            def one(span):
                a, e = span
                K.solve_round(rows[a:e], fresh[a:e], P, C32, C64, gram, gram.shape[0] > 0, Vn, R,
                              Rref, err_ref, Sidx, Sw, Sc, Sn, Gs, Ls, Qs, Gok, status, fval,
                              gapv, half, lam, self.tol, gm, self.maxnorm, m_add,
                              self.cheap_limit_compiled, 4)

            spread(one, pieces(len(rows), 8))

        active = np.arange(b)
        rnd = 0
        for rnd in range(1, self.max_rounds + 1):
            if active.size == 0:
                break
            K_now = int(Sn[active].max()) if active.size else 0
            m_add = self.first_adds if rnd == 1 else min(max(self.adds, K_now), 2 * self.adds)
            fresh = ~has_ref[active]
            if fresh.any():
                full(active[fresh])
            kernel(active, fresh, m_add)
            again = active[status[active] == K.NEED_FULL]
            if again.size:
                full(again)
                kernel(again, np.ones(again.size, bool), m_add)
            bad = active[status[active] == K.STUCK]
            if bad.size:
                stuck.append(bad)
            active = active[status[active] == K.CONTINUE]
        conv = status == K.DONE
        idx = torch.from_numpy(Sidx)
        w = torch.from_numpy(Sw)
        f = torch.from_numpy(fval)
        g = torch.from_numpy(gapv)
        done = torch.from_numpy(conv)
        if stuck:  # the batched path from scratch (float64 working sets when it must)
            rows = torch.from_numpy(np.concatenate(stuck))
            i2, w2, f2, g2, c2, r2, nf2, nr2 = self._solve_chunk(V[rows], lam)
            width = max(idx.shape[1], i2.shape[1])
            idx = torch.nn.functional.pad(idx, (0, width - idx.shape[1]), value=-1)
            w = torch.nn.functional.pad(w, (0, width - w.shape[1]))
            idx[rows] = torch.nn.functional.pad(i2, (0, width - i2.shape[1]), value=-1)
            w[rows] = torch.nn.functional.pad(w2, (0, width - w2.shape[1]))
            f[rows], g[rows], done[rows] = f2, g2, c2
            rnd, n_full, n_rows = max(rnd, r2), n_full + nf2, n_rows + nr2
        if self.trace is not None:
            self.trace.append({"compiled": True, "rounds": rnd, "stuck": int(sum(map(len, stuck)))})
        return idx, w, f, g, done, rnd, n_full, n_rows

    def _solve_chunk(self, V: torch.Tensor, lam: float):
        dev, c = self.device, self.c
        b, d = V.shape
        half = lam / 2
        ninf = -math.inf
        f64 = torch.float64
        idx = torch.full((b, 0), -1, dtype=torch.long, device=dev)  # supports (padded with -1)
        w = torch.zeros((b, 0), dtype=f64, device=dev)
        sup_corr = torch.zeros((b, 0), dtype=f64, device=dev)  # exact c_k . r on the support
        r = V.clone()  # exact residuals v - C^T w
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        fval = torch.full((b,), math.inf, dtype=f64, device=dev)
        gapv = torch.full((b,), math.inf, dtype=f64, device=dev)
        ref = None  # correlations C r_ref of each image's last full product (dictionary dtype)
        r_ref = torch.zeros_like(V)
        ref_err = torch.zeros(b, dtype=f64, device=dev)
        has_ref = torch.zeros(b, dtype=torch.bool, device=dev)
        force_full = torch.zeros(b, dtype=torch.bool, device=dev)
        extra = torch.full((b,), 8, dtype=torch.long, device=dev)
        exact_gram = lam == 0  # NNLS has no certificate slack: solve subproblems in float64
        n_full = n_rows = 0
        rnd = 0
        for rnd in range(1, self.max_rounds + 1):
            act = (~done).nonzero().flatten()
            if act.numel() == 0:
                break
            Ia, wa, ra, sca = idx[act], w[act], r[act], sup_corr[act]
            K = Ia.shape[1]
            rn = ra.norm(dim=1)
            err = self.gamma * self.maxnorm * rn  # rounding bound of a float32 c_j . r
            r32 = ra.to(self.C.dtype)
            m_add = self.first_adds if rnd == 1 else min(max(self.adds, K), 2 * self.adds)
            # Each group: rows into act, candidate indices E (n, T) (non-support concepts
            # that may reach l1/2), their approximate values, and "rest": an upper bound on
            # c_j . r for every concept outside E and outside the support.
            groups = []
            cheap = has_ref[act] & ~force_full[act]
            if bool(cheap.any()):
                ci = cheap.nonzero().flatten()
                a_ci = act[ci]
                slack = (ra[ci] - r_ref[a_ci]).norm(dim=1) * self.maxnorm + ref_err[a_ci]
                thr = (half - slack) - 1e-7 * (abs(half) + slack) - 1e-12  # rounded down
                refs = ref if a_ci.numel() == b else ref[a_ci]
                # the bound is too loose where too many concepts may reach the threshold:
                # a full product for those (decided from counts, before any selection)
                many = (refs - thr.to(refs.dtype)[:, None]).gt_(0).sum(1) >= self.cheap_limit
                if bool(many.any()):
                    cheap[ci[many]] = False
                    keep = ~many
                    ci, refs, thr, slack = ci[keep], refs[keep], thr[keep], slack[keep]
                if ci.numel():
                    E, _, rest = self._select(refs, thr, self.cheap_limit)
                    rest = rest + slack
                    vals = torch.bmm(self._gather32(E), r32[ci, :, None])[..., 0].double()
                    vals = vals.masked_fill_(E < 0, ninf)
                    groups.append((ci, E, vals, rest))
            fi = (~cheap).nonzero().flatten()
            if fi.numel():
                a_fi = act[fi]
                corr = r32[fi] @ self.C.T
                n_full += 1
                n_rows += fi.numel()
                if ref is None and a_fi.numel() == b:
                    ref = corr
                else:
                    if ref is None:
                        ref = torch.empty((b, c), dtype=self.C.dtype, device=dev)
                    ref[a_fi] = corr
                r_ref[a_fi] = ra[fi]
                ref_err[a_fi] = err[fi]
                has_ref[a_fi] = True
                force_full[a_fi] = False
                cap = K + m_add + int(extra[a_fi].max().item())
                E, vals, rest = self._select(corr, half - err[fi], cap)
                rest = rest + err[fi]
                vals = vals.double().masked_fill_(E < 0, ninf)
                groups.append((fi, E, vals, rest))
            if self.trace is not None:
                self.trace.append({"round": rnd, "active": int(act.numel()), "K": K,
                                   "full": int(fi.numel()),
                                   "T": [int(g[1].shape[1]) for g in groups]})

            # -- certificate and candidates, per group --------------------------------------
            f_act = rn * rn + lam * wa.sum(1)
            rv = (ra * V[act]).sum(1)
            rr = rn * rn
            sup_max = sca.max(1).values if K else torch.full_like(rn, ninf)
            work = []  # (rows into act, candidate indices (n, m))
            for rows, E, vals, rest in groups:
                if K:  # support concepts are certified exactly through sup_corr
                    vals = vals.masked_fill((E[:, :, None] == Ia[rows][:, None, :]).any(2), ninf)
                ne = min(4, vals.shape[1])
                top_v, top_j = vals.topk(ne, dim=1)
                top_i = torch.gather(E, 1, top_j).masked_fill_(~torch.isfinite(top_v), -1)
                top_exact = torch.einsum("ntd,nd->nt", self._gather64(top_i), ra[rows])
                top_exact = top_exact.masked_fill_(top_i < 0, ninf)
                others = vals.scatter(1, top_j, ninf).max(1).values + err[rows]
                maxc = torch.stack([sup_max[rows], top_exact.max(1).values, others, rest],
                                   1).max(1).values
                fr, rvr, rrr = f_act[rows], rv[rows], rr[rows]
                if lam > 0:
                    s_max = torch.where(maxc > 0, half / maxc.clamp_min(1e-300),
                                        torch.full_like(maxc, math.inf))
                    sc = torch.where(rrr > 0, rvr / rrr.clamp_min(1e-300), torch.zeros_like(rrr))
                    sc = torch.minimum(sc.clamp_min(0), s_max)
                    g = 2 * sc * rvr - sc * sc * rrr
                    gp = (fr - g).clamp_min(0)
                    ok = gp <= self.tol * fr
                else:  # no l1 term (plain NNLS): KKT, up to the products' rounding
                    ok = maxc <= 2 * err[rows] + 1e-12
                    gp = torch.where(ok, 0.0, math.inf).to(f64)
                a_rows = act[rows]
                fval[a_rows] = fr
                gapv[a_rows] = gp
                done[a_rows] = ok
                todo = ~ok
                if not bool(todo.any()):
                    continue
                # candidates: concepts outside the support that may violate, largest first
                tr = rows[todo]
                vt = vals[todo]
                if lam > 0:
                    score = torch.where(vt + err[tr][:, None] > half, vt, torch.full_like(vt, ninf))
                else:
                    score = torch.where(vt > err[tr][:, None], vt, torch.full_like(vt, ninf))
                m = min(m_add, score.shape[1])
                sv, si = score.topk(m, dim=1)
                cand = torch.gather(E[todo], 1, si).masked_fill_(~torch.isfinite(sv), -1)
                none = ~torch.isfinite(sv[:, 0])
                unresolved = none & (rest[todo] > half)
                if bool(unresolved.any()):  # the bound is too loose: redo a wider full product
                    ar_ = act[tr[unresolved]]
                    force_full[ar_] = True
                    extra[ar_] = extra[ar_] * 4
                if bool((none & ~unresolved).any()):
                    exact_gram = True  # nothing to add, yet not certified: refine in float64
                work.append((tr, cand))

            if not work:
                continue
            rows = torch.cat([t for t, _ in work])
            M = max(cd.shape[1] for _, cd in work)
            cand = torch.cat([torch.nn.functional.pad(cd, (0, M - cd.shape[1]), value=-1)
                              for _, cd in work])
            a_rows = act[rows]
            ws_idx = torch.cat([idx[a_rows], cand], 1)
            ws_w = torch.cat([w[a_rows], torch.zeros(cand.shape, dtype=f64, device=dev)], 1)
            for g_rows, new_idx, new_w, new_r, new_sc in self._solve_working_sets(
                    a_rows, ws_idx, ws_w, V, half, exact_gram):
                width = max(idx.shape[1], new_idx.shape[1])
                if width > idx.shape[1]:
                    pad = width - idx.shape[1]
                    idx = torch.nn.functional.pad(idx, (0, pad), value=-1)
                    w = torch.nn.functional.pad(w, (0, pad), value=0.0)
                    sup_corr = torch.nn.functional.pad(sup_corr, (0, pad), value=ninf)
                pad = width - new_idx.shape[1]
                idx[g_rows] = torch.nn.functional.pad(new_idx, (0, pad), value=-1)
                w[g_rows] = torch.nn.functional.pad(new_w, (0, pad), value=0.0)
                sup_corr[g_rows] = torch.nn.functional.pad(new_sc, (0, pad), value=ninf)
                r[g_rows] = new_r
            if idx.shape[1] and not bool((idx[:, -1] >= 0).any()):
                idx, w, sup_corr = _compact(idx, idx >= 0, w, sup_corr)
        return idx, w, fval, gapv, done, rnd, n_full, n_rows


# ----------------------------------------------------------------------------------------
# the reference's solver, for parity
# ----------------------------------------------------------------------------------------


def solve_sklearn(dictionary: torch.Tensor, v: torch.Tensor, l1_penalty: float, *,
                  max_iter: int = 10000, tol: float = 1e-6, dtype: str = "float64",
                  progress_desc: str | None = None):
    """scikit-learn ``Lasso(positive=True)`` one image at a time (the reference's default).

    ``alpha = l1_penalty / (2 d)`` makes scikit-learn's objective
    ``1/(2d) ||y - X w||^2 + alpha ||w||_1`` equal to ours divided by ``2d``. ``dtype``
    float64 (default) or float32 (exactly what the reference passes).
    """
    import numpy as np
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    check_problem(dictionary, v, l1_penalty)
    t0 = time.perf_counter()
    np_dtype = np.float64 if dtype == "float64" else np.float32
    X = np.asfortranarray(dictionary.detach().cpu().numpy().T.astype(np_dtype))
    Y = v.detach().cpu().numpy().astype(np_dtype)
    d = X.shape[0]
    lam = float(l1_penalty)
    clf = Lasso(alpha=lam / (2 * d), fit_intercept=False, positive=True, max_iter=max_iter, tol=tol)
    out = np.zeros((Y.shape[0], X.shape[1]), dtype=np.float64)
    rows = range(Y.shape[0])
    if progress_desc:
        from interpcore.progress import progress

        rows = progress(rows, desc=progress_desc, unit="img")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if lam == 0:
            warnings.simplefilter("ignore", UserWarning)
        for i in rows:
            clf.fit(X, Y[i])
            out[i] = clf.coef_
    W = torch.from_numpy(out).float().to(dictionary.device)
    f = objective(dictionary, v, W, lam)
    return W, SolveInfo("sklearn", f, None, None, 0, 0, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------
# ADMM with a Woodbury solve (optional)
# ----------------------------------------------------------------------------------------


class ADMMSolver:
    """Batched ADMM for the same problem, ``x``-update through the Woodbury identity.

    Splitting ``w = z`` (``z >= 0`` carries the l1 term), the ``x`` update solves
    ``(2 C C^T + rho I) x = 2 C v + rho (z - u)``; with ``A = C^T`` (``d x c``) the
    inverse is ``(1/rho) (I - 2 C (rho I_d + 2 C^T C)^{-1} C^T)``, so one ``d x d``
    Cholesky factor, computed once per dictionary, replaces the reference's ``c x c`` one.
    Stops when the primal and dual residuals of every image are below ``tol`` (as the
    reference does); this does not certify the objective.
    """

    def __init__(self, dictionary: torch.Tensor, *, rho: float = 5.0, tol: float = 1e-6,
                 max_iter: int = 5000):
        C = dictionary.detach().double().contiguous()
        self.C, self.rho, self.tol, self.max_iter = C, float(rho), float(tol), int(max_iter)
        d = C.shape[1]
        S = self.rho * torch.eye(d, dtype=C.dtype, device=C.device) + 2 * C.T @ C
        self.chol = torch.linalg.cholesky(S)

    def _apply_inverse(self, Y: torch.Tensor) -> torch.Tensor:
        """``(2 C C^T + rho I)^{-1} Y`` for ``Y`` of shape ``(c, n)``."""
        t = torch.cholesky_solve(self.C.T @ Y, self.chol)
        return (Y - 2 * self.C @ t) / self.rho

    def solve(self, v: torch.Tensor, l1_penalty: float, *, return_info: bool = True):
        check_problem(self.C, v, l1_penalty)
        t0 = time.perf_counter()
        lam = float(l1_penalty)
        V = v.detach().to(self.C.device, torch.float64)
        c = self.C.shape[0]
        Cb = 2 * self.C @ V.T  # (c, B)
        z = torch.zeros(c, V.shape[0], dtype=torch.float64, device=V.device)
        u = torch.zeros_like(z)
        it = 0
        for it in range(1, self.max_iter + 1):
            x = self._apply_inverse(Cb + self.rho * (z - u))
            z_old = z
            z = (x + u - lam / self.rho).clamp_min(0)
            u = u + x - z
            if (x - z).norm(dim=0).max() < self.tol and (self.rho * (z - z_old)).norm(dim=0).max() < self.tol:
                break
        W = z.T.float()
        f = objective(self.C, V, W, lam)
        info = SolveInfo("admm", f, None, None, it, 0, time.perf_counter() - t0)
        return (W, info) if return_info else W

    __call__ = solve


def make_solver(name: str | None, dictionary: torch.Tensor, **options):
    """A callable ``solve(v, l1_penalty) -> (weights, SolveInfo)`` for a solver name."""
    key = resolve_solver_name(name)
    if key == "active_set":
        return ActiveSetSolver(dictionary, **options)
    if key == "admm":
        return ADMMSolver(dictionary, **options)

    def sk(v, l1_penalty, return_info=True, **kw):
        W, info = solve_sklearn(dictionary, v, l1_penalty, **{**options, **kw})
        return (W, info) if return_info else W

    return sk
