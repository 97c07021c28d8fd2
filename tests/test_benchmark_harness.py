"""The benchmark harness measures in a child process and turns failures into rows."""

from benchmarks.harness import measure


def test_measures_time_and_peak_memory():
    result = measure("benchmarks.harness:allocate", {"megabytes": 200, "seconds": 0.05}, repeats=3, warmup=0)
    assert result.status == "ok"
    assert 0.05 <= result.median_s < 1.0
    assert 150 <= result.peak_extra_mb <= 400


def test_memory_cap_becomes_an_oom_row():
    result = measure("benchmarks.harness:allocate", {"megabytes": 3000}, repeats=1, warmup=0,
                     memory_limit_gb=1.5)
    assert result.status == "oom"


def test_time_cap_becomes_a_timeout_row():
    result = measure("benchmarks.harness:allocate", {"seconds": 30}, repeats=1, warmup=0, timeout_s=3)
    assert result.status == "timeout"


def test_unknown_workload_is_an_error_row():
    assert measure("benchmarks.harness:no_such_function", {}).status == "error"
