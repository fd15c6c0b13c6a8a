"""SpLiCE solvers: the default active-set solver against the reference (scikit-learn Lasso),
brute force on small problems, its duality-gap certificate, and bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from interp_splice.solvers import (
    ActiveSetSolver,
    ADMMSolver,
    make_solver,
    nnqp,
    objective,
    resolve_solver_name,
    solve_sklearn,
)
from interp_splice.synthetic import synthetic_problem
from interpcore import InterpError

PENALTIES = (0.1, 0.2, 0.25, 0.3, 0.35)
#: both CPU paths of the default solver: batched torch operations, and the per-image steps
#: compiled with numba (``compiled=True`` uses it for any batch size)
PATHS = pytest.mark.parametrize("compiled", (False, True), ids=("torch", "compiled"))


@pytest.fixture(scope="module")
def problem():
    # a few thousand concepts at CLIP-like geometry (shared direction removed by centring,
    # topics, near-synonyms), embeddings that need 5..40 concepts
    return synthetic_problem(c=2500, d=96, n=20, seed=3)


@PATHS
@pytest.mark.parametrize("l1", PENALTIES)
def test_objective_matches_sklearn_for_every_image(problem, l1, compiled):
    C, V = problem
    W, info = ActiveSetSolver(C, compiled=compiled).solve(V, l1)
    Ws, _ = solve_sklearn(C, V, l1)
    f = objective(C, V, W, l1)
    fs = objective(C, V, Ws, l1)
    rel = (f - fs) / fs
    print(f"l1={l1}: mean L0 {float((W > 0).sum(1).float().mean()):.1f}, "
          f"largest relative objective difference {float(rel.abs().max()):.2e}")
    assert bool(info.converged.all()), "some images were not certified"
    assert float(rel.abs().max()) <= 1e-4, f"objective differs from sklearn's by {rel.abs().max():.2e}"
    assert bool((W >= 0).all())


@PATHS
def test_solution_satisfies_kkt_conditions(problem, compiled):
    C, V = problem
    l1 = 0.25
    W, _ = ActiveSetSolver(C, compiled=compiled).solve(V, l1)
    W64, C64, V64 = W.double(), C.double(), V.double()
    grad = 2 * (W64 @ C64 - V64) @ C64.T + l1  # gradient of ||C^T w - v||^2 + l1 sum(w)
    on = W64 > 0
    assert float(grad[on].abs().max()) < 1e-4  # zero on the support (float32 weights)
    assert float(grad[~on].min()) > -1e-4  # nonnegative off the support


@PATHS
def test_certified_gap_bounds_the_true_suboptimality(problem, compiled):
    C, V = problem
    l1 = 0.2
    solver = ActiveSetSolver(C, tol=1e-3, compiled=compiled)  # stop early, so that the gap is not ~0
    W, info = solver.solve(V, l1)
    _, best = ActiveSetSolver(C, tol=1e-12).solve(V, l1)
    assert bool(info.converged.all())
    # f(w) - f* <= gap <= tol * f(w)
    assert bool((info.objective - best.objective <= info.gap + 1e-12).all())
    assert bool((info.gap <= 1e-3 * info.objective).all())


@PATHS
def test_batches_and_chunks_do_not_change_the_answer(problem, compiled):
    C, V = problem
    W_all, _ = ActiveSetSolver(C, compiled=compiled).solve(V, 0.25)
    W_chunks, _ = ActiveSetSolver(C, chunk_size=3, compiled=compiled).solve(V, 0.25)
    W_one, _ = ActiveSetSolver(C, compiled=compiled).solve(V[5:6], 0.25)
    assert torch.allclose(W_all, W_chunks, atol=1e-5)
    assert torch.allclose(W_all[5:6], W_one, atol=1e-5)


@PATHS
def test_large_penalty_gives_all_zero_weights_with_zero_gap(problem, compiled):
    C, V = problem
    top = float((V @ C.T).max())
    W, info = ActiveSetSolver(C, compiled=compiled).solve(V, 2 * top + 0.01)  # every correlation < l1/2
    assert bool((W == 0).all())
    assert torch.allclose(info.objective, torch.ones_like(info.objective), atol=1e-6)  # ||v||^2
    assert float(info.gap.max()) <= 1e-12


def test_zero_penalty_is_nonnegative_least_squares():
    from scipy.optimize import nnls

    C, V = synthetic_problem(c=60, d=24, n=4, seed=5)
    W, info = ActiveSetSolver(C).solve(V, 0.0)
    for i in range(V.shape[0]):
        w_ref, _ = nnls(C.double().T.numpy(), V[i].double().numpy())
        f_ref = objective(C, V[i : i + 1], torch.from_numpy(w_ref)[None], 0.0)
        assert float(info.objective[i]) <= float(f_ref) * (1 + 1e-6) + 1e-9


def test_nnqp_matches_brute_force_over_all_supports():
    g = torch.Generator().manual_seed(0)
    n, K, d = 6, 6, 10
    A = torch.randn(n, K, d, generator=g, dtype=torch.float64)
    G = A @ A.transpose(1, 2)
    q = torch.randn(n, K, generator=g, dtype=torch.float64)
    allowed = torch.ones(n, K, dtype=torch.bool)
    allowed[0, 2] = False
    w, finished = nnqp(G, q, allowed)
    assert bool(finished.all())

    def f(i, x):
        return float(x @ G[i] @ x - 2 * q[i] @ x)

    for i in range(n):
        best = 0.0  # w = 0
        idx = [j for j in range(K) if allowed[i, j]]
        for r in range(1, len(idx) + 1):
            for S in itertools.combinations(idx, r):
                S = list(S)
                x = torch.zeros(K, dtype=torch.float64)
                x[S] = torch.linalg.solve(G[i][S][:, S], q[i][S])
                if bool((x[S] > 0).all()):
                    best = min(best, f(i, x))
        assert f(i, w[i]) <= best + 1e-10
        assert bool((w[i] >= 0).all()) and float(w[i][~allowed[i]].abs().sum()) == 0


def test_nnqp_warm_start_reaches_the_same_optimum():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(4, 12, 20, generator=g, dtype=torch.float64)
    G = A @ A.transpose(1, 2)
    q = torch.randn(4, 12, generator=g, dtype=torch.float64)
    allowed = torch.ones(4, 12, dtype=torch.bool)
    w_cold, _ = nnqp(G, q, allowed)
    w0 = torch.rand(4, 12, generator=g, dtype=torch.float64)
    w_warm, _ = nnqp(G, q, allowed, w0)
    assert torch.allclose(w_cold, w_warm, atol=1e-9)


@PATHS
def test_duplicate_concepts_do_not_break_the_solver(compiled):
    C, V = synthetic_problem(c=300, d=32, n=6, seed=7)
    C = torch.cat([C, C[:50]])  # exact duplicates
    W, info = ActiveSetSolver(C, compiled=compiled).solve(V, 0.2)
    Ws, _ = solve_sklearn(C, V, 0.2)
    fs = objective(C, V, Ws, 0.2)
    assert bool(info.converged.all())
    assert float(((info.objective - fs) / fs).max()) <= 1e-4


def test_float64_dictionary_and_admm_agree_with_the_default():
    C, V = synthetic_problem(c=400, d=32, n=5, seed=11)
    _, ref = ActiveSetSolver(C).solve(V, 0.25)
    _, i64 = ActiveSetSolver(C.double()).solve(V, 0.25)
    assert torch.allclose(ref.objective, i64.objective, rtol=1e-6)
    W_admm, _ = ADMMSolver(C, tol=1e-8, max_iter=20000).solve(V, 0.25)
    f_admm = objective(C, V, W_admm, 0.25)
    assert float(((f_admm - ref.objective) / ref.objective).max()) < 1e-3
    assert float(((ref.objective - f_admm) / ref.objective).max()) < 1e-6  # never better


@pytest.mark.parametrize("name, expected", [(None, "active_set"), ("default", "active_set"),
                                            ("skl", "sklearn"), ("ADMM", "admm")])
def test_solver_names(name, expected):
    assert resolve_solver_name(name) == expected


def test_unknown_solver_name_suggests():
    with pytest.raises(InterpError, match="Did you mean: sklearn"):
        make_solver("sklearm", torch.eye(3))


@pytest.mark.parametrize(
    "C, V, l1, match",
    [
        (torch.eye(4), torch.ones(2, 3), 0.2, "3 dimensions but the concept dictionary has 4"),
        (torch.eye(4), torch.tensor([[1.0, float("nan"), 0, 0]]), 0.2, "NaN"),
        (torch.eye(4), torch.ones(1, 4), -0.1, ">= 0"),
        (torch.eye(4), torch.ones(1, 4), float("inf"), ">= 0"),
        (torch.zeros(0, 4), torch.ones(1, 4), 0.2, "empty"),
        (torch.eye(4), torch.ones(4), 0.2, r"\(batch, dim\)"),
    ],
)
def test_bad_input_is_a_clear_error(C, V, l1, match):
    with pytest.raises(InterpError, match=match):
        if C.shape[0] == 0:
            ActiveSetSolver(C)
        else:
            ActiveSetSolver(C).solve(V, l1)


# -- correlated (text-like) dictionaries, threads, exact support products -------------------


@pytest.fixture(scope="module")
def correlated_problem():
    # atoms in tight clusters around a few hundred directions (near-synonyms, as in real text
    # embeddings), concepts normalized, centred and renormalized as SpLiCE prepares them
    g = torch.Generator().manual_seed(11)
    d, c, n = 64, 1500, 24
    centres = torch.nn.functional.normalize(torch.randn(150, d, generator=g), dim=1)
    C = centres[torch.randint(0, 150, (c,), generator=g)] + 0.35 * torch.randn(c, d, generator=g) / d ** 0.5
    C = torch.nn.functional.normalize(C, dim=1)
    C = torch.nn.functional.normalize(C - C.mean(0), dim=1)
    mix = torch.rand(n, c, generator=g) * (torch.rand(n, c, generator=g) < 0.01)
    V = torch.nn.functional.normalize(mix @ C + 0.2 * torch.randn(n, d, generator=g) / d ** 0.5, dim=1)
    return C, V


@PATHS
@pytest.mark.parametrize("l1", (0.15, 0.25, 0.35))
def test_correlated_dictionary_matches_float32_sklearn_for_every_image(correlated_problem, l1,
                                                                      compiled):
    C, V = correlated_problem
    W, info = ActiveSetSolver(C, compiled=compiled).solve(V, l1)
    Ws, _ = solve_sklearn(C, V, l1, dtype="float32")  # the reference's own inputs
    f, fs = objective(C, V, W, l1), objective(C, V, Ws, l1)
    rel = (f - fs) / fs
    assert bool(info.converged.all())
    assert float(rel.max()) <= 1e-4, f"worse than sklearn by {rel.max():.2e}"
    assert float((info.gap / info.objective).max()) <= 1e-6
    assert info.product_rows >= V.shape[0]  # at least one full product per image


def test_threads_are_restored_and_workers_give_the_same_answer(correlated_problem):
    C, V = correlated_problem
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        W2, i2 = ActiveSetSolver(C).solve(V, 0.25)
        assert torch.get_num_threads() == 2
        W1, i1 = ActiveSetSolver(C, workers=1).solve(V, 0.25)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert bool(i1.converged.all()) and bool(i2.converged.all())
    rel = (i2.objective - i1.objective).abs() / i1.objective
    assert float(rel.max()) <= 2e-6  # both certified to 1e-6 of the same optimum


def test_cpu_batches_are_split_for_the_workers(correlated_problem):
    C, _ = correlated_problem
    s = ActiveSetSolver(C, workers=2)
    assert s._spans(256) == [(0, 128), (128, 256)]
    assert s._spans(128) == [(0, 128)]  # too small to split
    assert ActiveSetSolver(C, workers=1)._spans(256) == [(0, 256)]
    spans = ActiveSetSolver(C, workers=2, chunk_size=100)._spans(1000)
    assert spans[0][0] == 0 and spans[-1][1] == 1000 and len(spans) == 10
    assert all(b - a <= 100 for a, b in spans)


def test_sparse_support_products_equal_the_dense_ones(correlated_problem):
    C, V = correlated_problem
    s = ActiveSetSolver(C)
    g = torch.Generator().manual_seed(2)
    idx = torch.stack([torch.randperm(C.shape[0], generator=g)[:12] for _ in range(V.shape[0])])
    idx[::3, 8:] = -1  # padding
    w = torch.rand(idx.shape, dtype=torch.float64, generator=g).masked_fill(idx < 0, 0.0)
    V64 = V.double()
    r, sc = s._support_products(idx, w, V64)
    atoms = C.double()[idx.clamp_min(0)] * (idx >= 0)[..., None]
    r_ref = V64 - torch.einsum("nk,nkd->nd", w, atoms)
    sc_ref = torch.einsum("nkd,nd->nk", atoms, r_ref)
    assert torch.allclose(r, r_ref, atol=1e-12, rtol=0)
    assert torch.allclose(sc[idx >= 0], sc_ref[idx >= 0], atol=1e-12, rtol=0)
    assert bool(torch.isneginf(sc[idx < 0]).all())


# -- the compiled path: the same answers, its fallbacks --------------------------------------


def test_compiled_path_is_used_for_batches_and_gives_the_torch_paths_answer(correlated_problem):
    C, V = correlated_problem
    V = V.repeat(2, 1)  # 48 images: above COMPILED_MIN
    s = ActiveSetSolver(C)
    s.trace = []
    W, info = s.solve(V, 0.2)
    assert s.trace and s.trace[0].get("compiled"), "a 48-image CPU batch should use the compiled path"
    Wt, it = ActiveSetSolver(C, compiled=False).solve(V, 0.2)
    assert bool(info.converged.all()) and bool(it.converged.all())
    rel = (info.objective - it.objective).abs() / it.objective
    assert float(rel.max()) <= 2e-6  # both certified to 1e-6 of the same optimum
    assert torch.equal(W > 1e-6, Wt > 1e-6)


def test_compiled_path_with_the_gram_cache_gives_the_same_answer(correlated_problem):
    C, V = correlated_problem
    s = ActiveSetSolver(C, compiled=True, gram_cache_mb=64)
    _, cached = s.solve(V, 0.25)
    assert s._gram().shape == (C.shape[0], C.shape[0])
    s = ActiveSetSolver(C, compiled=True)  # default: no cache
    _, uncached = s.solve(V, 0.25)
    assert s._gram().shape == (0, 0)
    assert bool(uncached.converged.all())
    assert float(((uncached.objective - cached.objective).abs() / cached.objective).max()) <= 2e-6


def test_images_the_compiled_steps_give_up_on_are_solved_by_the_torch_path(correlated_problem,
                                                                          monkeypatch):
    from interp_splice import _compiled

    C, V = correlated_problem
    real = _compiled.solve_round

    def give_up_on_some(imgs, fresh, *args):
        real(imgs, fresh, *args)
        status = next(a for a in args if getattr(a, "dtype", None) == "int8")  # the statuses
        status[imgs[imgs % 5 == 0]] = _compiled.STUCK

    monkeypatch.setattr(_compiled, "solve_round", give_up_on_some)
    s = ActiveSetSolver(C, compiled=True)
    s.trace = []
    W, info = s.solve(V, 0.25)
    assert s.trace[-1]["stuck"] == len(range(0, V.shape[0], 5))
    _, ref = ActiveSetSolver(C, compiled=False).solve(V, 0.25)
    assert bool(info.converged.all())
    assert float(((info.objective - ref.objective).abs() / ref.objective).max()) <= 2e-6
    f = objective(C, V, W, 0.25)
    assert float(((f - ref.objective).abs() / ref.objective).max()) <= 1e-5


def test_openblas_runs_one_thread_inside_a_solve_and_is_restored_after(correlated_problem,
                                                                         monkeypatch):
    """The compiled path's products run in numpy's OpenBLAS from the solver's own worker
    threads: held at one thread while the solve runs, back to what it was after."""
    from threadpoolctl import threadpool_info

    from interp_splice import _compiled

    def openblas_threads():  # numpy's own OpenBLAS (scipy may load another, unused here)
        return [i["num_threads"] for i in threadpool_info()
                if i["internal_api"] == "openblas" and "numpy" in i["filepath"]]

    if not openblas_threads():
        pytest.skip("numpy does not use a bundled OpenBLAS here")
    C, V = correlated_problem
    real, seen = _compiled.solve_round, []

    def record(*args):
        seen.append(openblas_threads())
        real(*args)

    monkeypatch.setattr(_compiled, "solve_round", record)
    before = openblas_threads()
    _, info = ActiveSetSolver(C, compiled=True).solve(V, 0.25)
    assert bool(info.converged.all())
    assert seen and all(set(t) == {1} for t in seen)
    assert openblas_threads() == before


def test_without_numba_the_torch_path_runs(correlated_problem, monkeypatch):
    import sys

    C, V = correlated_problem
    import interp_splice

    monkeypatch.setitem(sys.modules, "interp_splice._compiled", None)  # import fails
    monkeypatch.delattr(interp_splice, "_compiled", raising=False)
    s = ActiveSetSolver(C)
    assert not s._compiled_ok(64, 0.25)
    s.trace = []
    _, info = s.solve(V.repeat(2, 1), 0.25)
    assert bool(info.converged.all()) and not any(t.get("compiled") for t in s.trace)


def test_compiled_path_on_a_float64_dictionary_is_certified(correlated_problem):
    # its products are float32 whatever the dictionary's dtype: the bound must be float32's
    C, V = correlated_problem
    _, i64 = ActiveSetSolver(C.double(), compiled=True).solve(V, 0.25)
    _, ref = ActiveSetSolver(C, compiled=False).solve(V, 0.25)
    assert bool(i64.converged.all())
    assert float(((i64.objective - ref.objective).abs() / ref.objective).max()) <= 2e-6
