"""Helpers for the benchmarks in ``bench/``: timing, peak memory, machine facts, markdown.

Every ``bench/bench_*.py`` defines ``main() -> str`` returning a markdown section; ``bench/run``
runs them all, each in its own process with a time limit, and rewrites ``BENCHMARKS.md``.
Import this module from a benchmark with::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import time_call, peak_traced, run_isolated, md_table

Memory, three ways (say which one a figure is):

- :func:`peak_traced` - peak of Python-level allocations during a call (tracemalloc; numpy
  arrays are counted, torch CPU tensors are not);
- :func:`run_isolated` - the maximum resident set size of a fresh process that runs one
  function (``ru_maxrss``): everything, torch included, with nothing inherited from the
  benchmark process;
- :func:`cuda_peak` - peak CUDA memory allocated by torch during a call.

Standard library only at import time.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


# --------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def timer():
    """``with timer() as t: ...`` then ``t()`` is the elapsed wall time in seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def time_call(fn: Callable, *args, repeat: int = 3, warmup: int = 1, sync: Callable | None = None,
              **kwargs) -> dict:
    """Wall time of ``fn(*args, **kwargs)``: ``{"median", "min", "max", "runs", "result"}``.

    ``warmup`` calls are not timed. ``sync`` (e.g. ``torch.cuda.synchronize``) is called
    before each clock reading, for asynchronous devices.
    """
    result = None
    for _ in range(warmup):
        result = fn(*args, **kwargs)
    runs = []
    for _ in range(max(1, repeat)):
        if sync:
            sync()
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        if sync:
            sync()
        runs.append(time.perf_counter() - t0)
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs,
            "result": result}


def time_limit() -> float:
    """Seconds this benchmark may take (``bench/run`` sets ``INTERP_BENCH_TIME_LIMIT``);
    benchmarks can use it to choose their sizes. Defaults to 300."""
    try:
        return float(os.environ.get("INTERP_BENCH_TIME_LIMIT", "300"))
    except ValueError:
        return 300.0


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


def peak_traced(fn: Callable, *args, **kwargs) -> tuple[object, int]:
    """``(result, peak_bytes)``: the peak of traced (Python / numpy) allocations during the
    call, above what was allocated when it started."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        result = fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, max(0, peak)


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int:
    """Resident set size now (Linux ``/proc/self/statm``; falls back to the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return max_rss_bytes()


_ISOLATED = r"""
import json, os, resource, sys, time, importlib
sys.path[:0] = {paths!r}
mod, _, name = {target!r}.partition(":")
fn = getattr(importlib.import_module(mod), name)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
result = fn(*json.loads({args!r}), **json.loads({kwargs!r}))
wall = time.perf_counter() - t0
scale = 1 if sys.platform == "darwin" else 1024
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print("\n@@BENCH@@" + json.dumps({{"result": result, "wall": wall, "max_rss": peak,
                                  "rss_before_call": base * scale}}, default=str))
"""


def run_isolated(target: str, *args, timeout: float | None = None, env: dict | None = None,
                 **kwargs) -> dict:
    """Run ``module:function(*args, **kwargs)`` in a fresh Python process.

    Arguments and the return value must be JSON-serializable. Returns ``{"result", "wall",
    "max_rss", "rss_before_call"}`` (bytes; ``max_rss`` is the whole process's peak, imports
    included, so compare two runs of the same kind). ``bench/`` and the repository root are
    on the child's path. Raises ``RuntimeError`` with the child's stderr when it fails.
    """
    code = _ISOLATED.format(paths=[str(BENCH_DIR), str(REPO)], target=target,
                            args=json.dumps(list(args)), kwargs=json.dumps(kwargs))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    marker = proc.stdout.rfind("@@BENCH@@")
    if proc.returncode != 0 or marker < 0:
        raise RuntimeError(f"{target} failed in a subprocess (exit {proc.returncode}):\n"
                           + proc.stderr[-2000:])
    return json.loads(proc.stdout[marker + len("@@BENCH@@"):])


def cuda_peak(fn: Callable, *args, device=None, **kwargs) -> tuple[object, int]:
    """``(result, peak_bytes)`` of CUDA memory allocated by torch during the call."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn(*args, **kwargs)
    torch.cuda.synchronize(device)
    return result, max(0, torch.cuda.max_memory_allocated(device) - base)


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def md_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table (pipes in cells are escaped)."""

    def cell(v):
        if isinstance(v, float):
            v = f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota (containers), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def total_ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gpus() -> list[str]:
    """GPU names with memory (nvidia-smi, else torch), or [] when there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return [ln.strip() for ln in out.stdout.strip().splitlines()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    if not (Path("/dev/nvidiactl").exists() or Path("/dev/kfd").exists() or sys.platform == "darwin"):
        return []  # no GPU driver: skip importing torch just to be told so
    code = ("import torch, json\n"
            "print(json.dumps([f'{torch.cuda.get_device_name(i)}, "
            "{torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB' "
            "for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return []


def machine_info() -> dict:
    ram = total_ram_bytes()
    limit = cgroup_cpu_limit()
    cores = f"{os.cpu_count()} logical, {usable_cores()} usable by this process"
    if limit is not None:
        cores += f", cgroup quota {limit:g}"
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    try:
        load = ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "unknown"
    return {
        "CPU": cpu_model(),
        "cores": cores,
        "RAM": fmt_bytes(ram) if ram else "unknown",
        "GPU": "; ".join(gpus()) or "none",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "thread settings": ", ".join(f"{k}={v}" for k, v in threads.items()) or "library defaults",
        "load average (1, 5, 15 min) when written": load,
    }


PACKAGES = ["interpcore", "torch", "torchvision", "open_clip_torch", "transformers", "timm",
            "numpy", "scipy", "scikit-learn", "grad-cam", "safetensors", "matplotlib", "h5py",
            "pillow"]


def versions(packages: Sequence[str] = PACKAGES) -> dict:
    """Installed versions, read from package metadata (nothing is imported)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def import_bench(name: str):
    """Import ``bench/<name>.py`` as a module (for tests of the benchmarks)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)
