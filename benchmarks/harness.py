"""Measure one workload in a fresh process: median time and peak extra memory.

A workload is named by ``"module:function"``; the function takes keyword arguments and returns
a zero-argument callable that does the work once (for example a loss forward and backward).
Each measurement runs in its own process so that peak memory is honest (peak resident set
size during the runs minus the resident size before them) and so that a workload that runs out of
memory or time becomes a row that says so instead of taking the machine down.

The process is forked from a small server that has imported torch and the library under test
and done nothing else (no tensor operation has run in it, so no thread pool exists to be
inherited): a fresh process without the second or two of interpreter start and imports that
would otherwise dominate a grid of short rows. ``fresh_interpreter=True`` (or the environment
variable ``BENCH_FRESH_INTERPRETERS=1``) starts a new interpreter per measurement instead.

Timing: the requested warm-up calls (more while they take under ``WARMUP_S`` in all), then timed
calls until ``repeats`` of them or ``min_time`` seconds; the median is reported. A first call
that takes ``SLOW_CALL_S`` or more is the one timed call.

A workload's callable may also have ``reset()``, called once the warm-up is over, and
``report()``, whose dict (for example a split of the time into phases, or a quality score of
the last result) is returned as ``Result.report``.

Usage from a benchmark script::

    result = measure("benchmarks.workloads:loss_step", {"library": "deepmetric", ...})
    result.status  # "ok", "oom", "timeout", "error" or "unavailable"
"""

import atexit
import json
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# After the requested warm-up calls, keep warming up (up to MAX_WARMUP_CALLS in all) while the
# warm-up has taken less than WARMUP_S seconds.
WARMUP_S = 0.25
MAX_WARMUP_CALLS = 5
# A first call at least this slow is timed as it is, and is the only timed call: one-time costs
# are a small part of it, and repeating it would double the cost of the slowest rows.
SLOW_CALL_S = 2.0
# What each fork server imports before forking (best effort: a missing package is skipped).
_COMMON_PRELOAD = ("torch", "numpy", "benchmarks.shapes", "benchmarks.workloads")
_LIBRARY_SUBMODULES = (
    "distances", "reducers", "regularizers", "losses", "miners", "samplers", "trainers",
    "utils.accuracy_calculator", "utils.inference",
)
PRELOAD = {
    "deepmetric": _COMMON_PRELOAD + tuple(f"deepmetric.{m}" for m in _LIBRARY_SUBMODULES),
    "reference": _COMMON_PRELOAD + tuple(f"pytorch_metric_learning.{m}" for m in _LIBRARY_SUBMODULES),
    None: _COMMON_PRELOAD,
}


@dataclass
class Result:
    status: str  # ok | oom | timeout | error | unavailable
    median_s: float = None
    peak_extra_mb: float = None
    detail: str = ""
    report: dict = None

    def to_dict(self):
        out = asdict(self)
        if out["report"] is None:
            del out["report"]
        return out


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [os.path.join(REPO_ROOT, "src"), REPO_ROOT, env.get("PYTHONPATH", "")] if p
    )
    return env


def measure(
    workload,
    kwargs,
    repeats=5,
    warmup=1,
    timeout_s=120,
    memory_limit_gb=8,
    threads=None,
    min_time=None,
    fresh_interpreter=None,
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
    if fresh_interpreter is None:
        fresh_interpreter = os.environ.get("BENCH_FRESH_INTERPRETERS") == "1" or not hasattr(os, "fork")
    if fresh_interpreter:
        return _measure_in_new_interpreter(request, timeout_s)
    library = kwargs.get("library") if kwargs.get("library") in PRELOAD else None
    return _server(library).measure(request, timeout_s)


def _measure_in_new_interpreter(request, timeout_s):
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.harness", json.dumps(request)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=_child_env(),
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired:
        return Result("timeout", detail=f"over {timeout_s:g} s")
    return _parse(proc.returncode, proc.stdout, proc.stderr)


# What running out of memory says: Python, torch's allocator, C++ (faiss), numpy, the C library.
_OUT_OF_MEMORY = re.compile(
    r"MemoryError|bad_alloc|out of memory|(can't|cannot|unable to|failed to) allocate", re.IGNORECASE
)


def _parse(returncode, stdout, stderr):
    """The child's JSON line, or a failure row from its exit status and last words."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode != 0 or not lines:
        tail = " ".join(stderr.strip().splitlines()[-2:])
        if _OUT_OF_MEMORY.search(stderr) or returncode == -9:
            return Result("oom", detail=tail[-300:])
        return Result("error", detail=tail[-300:] or f"exit status {returncode}")
    return Result(**json.loads(lines[-1]))


class _ForkServer:
    """A ``python -m benchmarks.harness --serve`` process that forks one child per request.

    Protocol (one line each way): the parent writes ``{"request": ..., "output": path}``; the
    server forks, answers ``<pid>``, waits for the child and answers ``exit <status>``. The
    child writes its stdout and stderr to ``path``.
    """

    def __init__(self, library):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.harness", "--serve", *PRELOAD[library]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
            cwd=REPO_ROOT,
        )
        self._buffer = b""

    def alive(self):
        return self.proc.poll() is None

    def _readline(self, timeout=None):
        """One line from the server, or None when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError("the benchmark fork server exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def measure(self, request, timeout_s):
        with tempfile.NamedTemporaryFile(prefix="bench-", suffix=".out", delete=False) as f:
            path = f.name
        try:
            self.proc.stdin.write((json.dumps({"request": request, "output": path}) + "\n").encode())
            self.proc.stdin.flush()
            pid = int(self._readline())
            line = self._readline(timeout_s)
            timed_out = line is None
            if timed_out:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                line = self._readline()
            status = int(line.split()[1])
            with open(path, errors="replace") as f:
                output = f.read()
        finally:
            os.unlink(path)
        if timed_out:
            return Result("timeout", detail=f"over {timeout_s:g} s")
        return _parse(status, output, output)

    def close(self):
        if self.alive():
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_SERVERS = {}


def _server(library):
    server = _SERVERS.get(library)
    if server is None or not server.alive():
        server = _SERVERS[library] = _ForkServer(library)
    return server


@atexit.register
def close_servers():
    for server in _SERVERS.values():
        server.close()
    _SERVERS.clear()


def _serve(preload):
    """The fork server's loop (see ``_ForkServer``)."""
    import importlib

    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for line in sys.stdin:
        message = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)  # its own process group, so that a timeout kills what it started
            code = 0
            try:
                fd = os.open(message["output"], os.O_WRONLY | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                _child(message["request"])
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exit {os.waitstatus_to_exitcode(status)}\n")
        sys.stdout.flush()


def allocate(megabytes=0, seconds=0.0):
    """A calibration workload: hold ``megabytes`` of memory for ``seconds``."""

    def run():
        block = bytearray(int(megabytes * 2**20))
        block[:: 4096] = b"x" * len(block[:: 4096])
        time.sleep(seconds)
        return block

    return run


def die(signal_number):
    """A calibration workload whose first call kills its own process with ``signal_number``."""
    return lambda: os.kill(os.getpid(), signal_number)


class count_calls:
    """A calibration workload that counts its calls since ``reset()`` and reports the count;
    each call sleeps ``seconds``."""

    def __init__(self, seconds=0.0):
        self.calls = 0
        self.seconds = seconds

    def __call__(self):
        self.calls += 1
        time.sleep(self.seconds)

    def reset(self):
        self.calls = 0

    def report(self):
        return {"calls": self.calls}


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
        times = []
        warm_start = time.perf_counter()
        for done in range(MAX_WARMUP_CALLS):
            # the requested warm-up calls, then more while they stay cheap: caches, the
            # allocator and lazily built state settle before timing.
            if done >= request["warmup"] and (done == 0 or time.perf_counter() - warm_start > WARMUP_S):
                break
            if hasattr(run, "reset"):
                run.reset()
            start = time.perf_counter()
            run()
            if done == 0 and time.perf_counter() - start >= SLOW_CALL_S:
                times.append(time.perf_counter() - start)
                break
        if not times:
            if hasattr(run, "reset"):
                run.reset()
            for _ in range(request["repeats"]):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
                if request.get("min_time") and sum(times) >= request["min_time"]:
                    break
    except (MemoryError, RuntimeError) as err:
        message = " ".join(str(err).split())
        status = "oom" if isinstance(err, MemoryError) or _OUT_OF_MEMORY.search(message) else "error"
        print(json.dumps({"status": status, "detail": message[:300]}))
        return
    peak_extra = max(0.0, _peak_rss_mb() - baseline)
    out = {"status": "ok", "median_s": statistics.median(times), "peak_extra_mb": peak_extra}
    if hasattr(run, "report"):
        out["report"] = run.report()
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        _serve(sys.argv[2:])
    else:
        _child(json.loads(sys.argv[1]))
