"""Measure one workload in a fresh process: median time and peak extra memory.

A workload is named by ``"module:function"``; the function takes keyword arguments and returns
a zero-argument callable that does the work once (for example a loss forward and backward).
Each measurement runs in its own Python process so that peak memory is honest (peak resident set
size during the runs minus the resident size before them) and so that a workload that runs out of
memory or time becomes a row that says so instead of taking the machine down.

Usage from a benchmark script::

    result = measure("benchmarks.loss_workloads:loss_step", {"library": "deepmetric", ...})
    result.status  # "ok", "oom", "timeout" or "error"
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# After the requested warm-up calls, keep warming up (up to MAX_WARMUP_CALLS in all) while the
# warm-up has taken less than WARMUP_S seconds.
WARMUP_S = 0.25
MAX_WARMUP_CALLS = 5


@dataclass
class Result:
    status: str  # ok | oom | timeout | error | unavailable
    median_s: float = None
    peak_extra_mb: float = None
    detail: str = ""

    def to_dict(self):
        return asdict(self)


def measure(
    workload, kwargs, repeats=5, warmup=1, timeout_s=120, memory_limit_gb=8, threads=None, min_time=None
):
    """Run ``workload(**kwargs)`` in a child process; see the module docstring.

    ``min_time`` (seconds) stops the timed calls early once they add up to it, so slow rows cost
    at least one timed call and at most about ``min_time`` plus one call.
    """
    request = {
        "workload": workload,
        "kwargs": kwargs,
        "repeats": repeats,
        "min_time": min_time,
        "warmup": warmup,
        "memory_limit_gb": memory_limit_gb,
        "threads": threads,
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [os.path.join(REPO_ROOT, "src"), REPO_ROOT, env.get("PYTHONPATH", "")] if p
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.harness", json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired:
        return Result("timeout", detail=f"over {timeout_s} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])
        if "MemoryError" in proc.stderr or "alloc" in proc.stderr.lower() or proc.returncode == -9:
            return Result("oom", detail=tail[-300:])
        return Result("error", detail=tail[-300:])
    return Result(**json.loads(lines[-1]))


def allocate(megabytes=0, seconds=0.0):
    """A calibration workload: hold ``megabytes`` of memory for ``seconds``."""

    def run():
        block = bytearray(int(megabytes * 2**20))
        block[:: 4096] = b"x" * len(block[:: 4096])
        time.sleep(seconds)
        return block

    return run


def _rss_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _child(request):
    limit = int(request["memory_limit_gb"] * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import importlib

    import torch

    if request["threads"]:
        torch.set_num_threads(request["threads"])
    module_name, function_name = request["workload"].split(":")
    module = importlib.import_module(module_name)
    try:
        run = getattr(module, function_name)(**request["kwargs"])
    except ImportError as err:
        print(json.dumps({"status": "unavailable", "detail": str(err)}))
        return
    baseline = _rss_mb()
    try:
        warm_start = time.perf_counter()
        for done in range(MAX_WARMUP_CALLS):
            # the requested warm-up calls, then more while they stay cheap: caches, the
            # allocator and lazily built state settle before timing.
            if done >= request["warmup"] and (done == 0 or time.perf_counter() - warm_start > WARMUP_S):
                break
            run()
        times = []
        for _ in range(request["repeats"]):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
            if request.get("min_time") and sum(times) >= request["min_time"]:
                break
    except (MemoryError, RuntimeError) as err:
        message = " ".join(str(err).split())
        status = "oom" if isinstance(err, MemoryError) or "alloc" in message.lower() else "error"
        print(json.dumps({"status": status, "detail": message[:300]}))
        return
    peak_extra = max(0.0, _peak_rss_mb() - baseline)
    print(json.dumps({"status": "ok", "median_s": statistics.median(times), "peak_extra_mb": peak_extra}))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
