"""The benchmark harness measures in a child process and turns failures into rows."""

import os
import subprocess
import sys

import pytest

from benchmarks import grid
from benchmarks.harness import measure


def test_measures_time_and_peak_memory():
    result = measure("benchmarks.harness:allocate", {"megabytes": 200, "seconds": 0.05}, repeats=3, warmup=0)
    assert result.status == "ok"
    assert 0.05 <= result.median_s < 5.0  # generous: CI machines may be busy
    assert 150 <= result.peak_extra_mb <= 400


def _address_space_gb_after_importing_torch():
    """Virtual memory of a fresh interpreter that imported torch: the part of the harness's
    address-space cap that the libraries use before any workload runs (a few hundred MB for the
    CPU build, several GB for a build that ships the CUDA libraries)."""
    code = "import torch; print(open('/proc/self/statm').read().split()[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def test_memory_cap_becomes_an_oom_row():
    # 1.5 GB of room above what importing torch maps, whichever torch build is installed: a
    # workload that needs 3 GB runs out of memory, one that needs 200 MB does not.
    cap_gb = _address_space_gb_after_importing_torch() + 1.5
    too_big = measure("benchmarks.harness:allocate", {"megabytes": 3000}, repeats=1, warmup=0,
                      memory_limit_gb=cap_gb)
    assert too_big.status == "oom", too_big
    fits = measure("benchmarks.harness:allocate", {"megabytes": 200}, repeats=1, warmup=0,
                   memory_limit_gb=cap_gb)
    assert fits.status == "ok", fits


def test_time_cap_becomes_a_timeout_row():
    result = measure("benchmarks.harness:allocate", {"seconds": 30}, repeats=1, warmup=0, timeout_s=3)
    assert result.status == "timeout"


def test_unknown_workload_is_an_error_row():
    assert measure("benchmarks.harness:no_such_function", {}).status == "error"


def test_fresh_interpreter_mode_measures_the_same_way():
    result = measure("benchmarks.harness:allocate", {"megabytes": 200, "seconds": 0.05}, repeats=3, warmup=0,
                     fresh_interpreter=True)
    assert result.status == "ok" and 150 <= result.peak_extra_mb <= 400


def test_workload_report_comes_back_and_counts_only_timed_calls():
    result = measure("benchmarks.harness:count_calls", {}, repeats=4, warmup=2)
    assert result.status == "ok"
    assert result.report == {"calls": 4}  # reset() after the warm-up


def test_a_slow_first_call_is_the_only_timed_call():
    result = measure("benchmarks.harness:count_calls", {"seconds": 2.05}, repeats=5, warmup=1)
    assert result.status == "ok" and result.report == {"calls": 1} and result.median_s >= 2.05


def test_a_crashing_child_is_a_failed_row_and_the_next_measurement_still_runs():
    import signal

    bad_argument = measure("benchmarks.harness:allocate", {"gigabytes": 1}, repeats=1, warmup=0)
    assert bad_argument.status == "error" and "unexpected keyword argument" in bad_argument.detail
    crashed = measure("benchmarks.harness:die", {"signal_number": int(signal.SIGSEGV)}, repeats=1, warmup=0)
    assert crashed.status == "error" and "-11" in crashed.detail
    killed = measure("benchmarks.harness:die", {"signal_number": int(signal.SIGKILL)}, repeats=1, warmup=0)
    assert killed.status == "oom"  # what the kernel's out-of-memory killer looks like
    assert measure("benchmarks.harness:allocate", {"megabytes": 1}, repeats=1, warmup=0).status == "ok"


def test_min_time_stops_timed_calls_early():
    result = measure("benchmarks.harness:allocate", {"seconds": 0.2}, repeats=50, warmup=0, min_time=0.3)
    assert result.status == "ok"
    assert 0.2 <= result.median_s < 1.0


def _entry(name="Row", n=512, d=128, ours=None, theirs=None, floor=None):
    entry = {"grid": "losses", "name": name, "n": n, "d": d, "deepmetric": ours}
    if theirs is not None:
        entry["reference"] = theirs
    if floor is not None:
        entry["floor"] = floor
    return entry


def _ok(seconds, mb=10.0):
    return {"status": "ok", "median_s": seconds, "peak_extra_mb": mb, "detail": ""}


def test_speedup_and_floor_ratio_are_reference_over_ours_and_ours_over_floor():
    entry = _entry(ours=_ok(0.5), theirs=_ok(2.0), floor=_ok(0.1))
    assert grid.speedup(entry) == 4.0
    assert grid.floor_ratio(entry) == 5.0
    assert grid.speedup(_entry(ours=_ok(0.5), theirs={"status": "oom"})) is None


def test_table_says_when_the_reference_failed():
    text = grid.table([_entry(ours=_ok(0.002), theirs={"status": "oom", "detail": ""})])
    row = text.splitlines()[2]
    assert "| out of memory | reference failed |" in row
    assert "| 2.0 |" in row


def test_summary_counts_median_slower_rows_and_memory_misses():
    entries = [
        _entry("A", ours=_ok(1.0), theirs=_ok(3.0), floor=_ok(0.5)),
        _entry("B", ours=_ok(1.0), theirs=_ok(0.5), floor=_ok(0.2)),
        _entry("C", ours=_ok(1.0), theirs=_ok(5.0), floor=_ok(0.4)),
        _entry("D", n=4096, d=512, ours=_ok(1.0, mb=3000)),
    ]
    text = grid.summary(entries)
    # floor ratios 2.0, 5.0 and 2.5 at D=128: the middle row is 2.5x its floor
    assert "median row 2.5x its floor over 3 rows at D=128 (target 3x: met" in text
    assert "median speed-up 3.0x over 3 rows" in text
    assert "slower than the reference: B N=512" in text
    assert "over the memory target (or failed): D N=4096" in text
    assert "misses without a recorded reason: B N=512 (speed), D N=4096 (memory)" in text


def test_median_target_is_the_middle_row_within_3x_of_its_floor():
    from benchmarks import targets

    def rows(*ratios):
        return [_entry(f"R{i}", ours=_ok(r), floor=_ok(1.0)) for i, r in enumerate(ratios)]

    assert targets.median_floor_ratio(rows(1.0, 2.9, 9.0)) == (2.9, 3)
    # an even count takes the upper of the two middle rows
    assert targets.median_floor_ratio(rows(1.0, 2.0, 3.5, 9.0)) == (3.5, 4)
    # rows without a floor and rows at D=512 do not count
    extra = [_entry("X", ours=_ok(1.0)), _entry("Y", n=4096, d=512, ours=_ok(50.0), floor=_ok(1.0))]
    assert targets.median_floor_ratio(rows(1.0, 2.0, 3.0) + extra) == (2.0, 3)
    assert "(target 3x: met" in grid.summary(rows(1.0, 2.9, 9.0))
    assert "median row 3.5x its floor over 4 rows at D=128 (target 3x: missed" in grid.summary(
        rows(1.0, 2.0, 3.5, 9.0)
    )
    assert targets.median_floor_ratio([_entry("Z", ours=_ok(1.0))]) == (None, 0)


def test_a_missed_median_needs_a_reason_per_grid(monkeypatch):
    from benchmarks import reasons

    entries = [_entry("A", ours=_ok(1.0), floor=_ok(0.2)), _entry("B", ours=_ok(1.0), floor=_ok(0.25))]
    monkeypatch.delitem(reasons.MEDIAN_WHY, "losses", raising=False)
    text = grid.summary(entries)
    assert "(target 3x: missed)" in text
    assert text.endswith("misses without a recorded reason: the median (floor).")
    monkeypatch.setitem(reasons.MEDIAN_WHY, "losses", "the passes cost more than the products")
    text = grid.summary(entries)
    assert "(target 3x: missed; why: the passes cost more than the products)" in text
    assert "without a recorded reason" not in text
    # a shape can have its own reason
    monkeypatch.setitem(reasons.MEDIAN_WHY, ("losses", "sop"), "many small classes")
    sop = [dict(e, shape="sop") for e in entries]
    assert "why: many small classes" in grid.summary(sop)


def test_reasons_can_be_narrowed_to_a_shape_and_a_size(monkeypatch):
    from benchmarks import reasons

    monkeypatch.setitem(reasons.WHY, ("Z", "speed"), "general")
    monkeypatch.setitem(reasons.WHY, ("Z", "speed", "sop"), "on sop")
    monkeypatch.setitem(reasons.WHY, ("Z", "speed", "sop", 2048), "on sop at 2048")
    assert reasons.why("Z", "speed", 512, "easy") == "general"
    assert reasons.why("Z", "speed", 512, "sop") == "on sop"
    assert reasons.why("Z", "speed", 2048, "sop") == "on sop at 2048"
    assert reasons.why("Z", "floor", 2048, "sop") is None


def test_median_ceiling_bounds_the_median_speedup():
    from benchmarks import targets

    entries = [
        _entry("A", ours=_ok(1.0), theirs=_ok(2.0), floor=_ok(1.0)),
        _entry("B", ours=_ok(1.0), theirs=_ok(4.0), floor=_ok(0.5)),
        _entry("C", ours=_ok(1.5), theirs=_ok(3.0), floor=_ok(1.5)),
    ]
    assert targets.median_ceiling(entries) == (2.0, 3)  # ceilings 2, 8 and 2
    assert targets.median_speedup(entries)[0] <= targets.median_ceiling(entries)[0]
    assert "the reference's median row is 2.0x its floor (3 rows)" in grid.summary(entries)


def test_evaluation_targets_floor_at_50000_and_memory_at_200000():
    from benchmarks import targets

    def evaluation(n, seconds, mb=100.0, floor=None):
        entry = {"grid": "evaluation", "name": grid.MAX_BIN_COUNT_NAME, "shape": "sop", "n": n, "d": 128,
                 "deepmetric": _ok(seconds, mb)}
        if floor is not None:
            entry["floor"] = _ok(floor)
        return entry

    assert targets.misses(evaluation(50000, 20.0, floor=6.0)) == [("floor", "3.3x its floor (target 3x)")]
    assert targets.misses(evaluation(50000, 17.0, floor=6.0)) == []
    assert targets.misses(evaluation(10000, 17.0, floor=1.0)) == []  # no floor target below 50,000
    assert targets.misses(evaluation(200000, 300.0, mb=2500)) == []
    assert targets.misses(evaluation(200000, 300.0, mb=3500)) == [("memory", "3500 MB (target 3072 MB)")]
    failed = evaluation(200000, 1.0)
    failed["deepmetric"] = {"status": "timeout", "detail": "over 600 s"}
    assert targets.misses(failed) == [("memory", "did not finish (timeout)")]


def test_kmeans_rows_compare_time_and_nmi_with_faiss():
    from benchmarks import targets

    def kmeans(ours_s, faiss_s, ours_nmi, faiss_nmi):
        return {"grid": "kmeans", "name": "k-means (niter=20)", "shape": "cub", "n": 50000, "d": 128,
                "deepmetric": {**_ok(ours_s), "report": {"nmi": ours_nmi, "clusters": 850}},
                "faiss": {**_ok(faiss_s), "report": {"nmi": faiss_nmi, "clusters": 850}}}

    assert targets.misses(kmeans(3.0, 2.0, 0.800, 0.805)) == []
    assert targets.misses(kmeans(5.0, 2.0, 0.70, 0.80)) == [
        ("time", "2.5x faiss' time (target 2x)"),
        ("quality", "NMI 0.700 against faiss' 0.800"),
    ]
    text = grid.summary([kmeans(5.0, 2.0, 0.70, 0.80)])
    assert "over 2x faiss' time: k-means (niter=20) N=50000" in text
    assert "slower than the reference" not in text
    row = grid.kmeans_table([kmeans(3.0, 2.0, 0.8, 0.805)]).splitlines()[2]
    assert "| 850 | 3.0 | 2.0 | 1.50x | 0.800 | 0.805 |" in row


def test_training_table_shows_each_librarys_phase_split():
    from benchmarks.training import PHASES

    phases = {p: 1.0 for p in PHASES}
    entry = {"grid": "training", "name": "MetricLossOnly MLP", "shape": "sop", "n": 256, "d": 128,
             "deepmetric": {**_ok(0.007), "report": {"mean_ms": 7.0, "phases_ms": phases, "iterations": 9}},
             "reference": {**_ok(0.014), "report": {"mean_ms": 7.0, "phases_ms": phases, "iterations": 9}}}
    text = grid.training_table([entry])
    assert "| MetricLossOnly MLP | 256 | 7.0 | 14.0 | 2.0x |" in text
    assert "| MetricLossOnly MLP | 256 | deepmetric | 7.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 |" in text
    assert grid.summary([entry]) == "slower than the reference: none."


def test_every_loss_and_miner_case_has_a_row_per_size():
    rows = grid.loss_rows() + grid.miner_rows()
    names = {r.name for r in rows}
    assert {"ContrastiveLoss", "TripletMarginMiner"} <= names
    assert all(r.with_reference == ((r.n, r.d) != grid.LARGE) for r in rows)


def test_every_grid_reports_every_shape_with_unique_row_keys():
    from benchmarks import shapes

    for name, make in grid.GRIDS.items():
        rows = make()
        assert {r.shape for r in rows} == set(shapes.NAMES), name
        keys = [r.key for r in rows]
        assert len(keys) == len(set(keys)), name
    evaluation = grid.evaluation_rows()
    for shape in shapes.NAMES:
        at_50000 = {r.name for r in evaluation if r.shape == shape and r.n == 50000}
        assert at_50000 == {grid.DEFAULT_NAME, grid.MAX_BIN_COUNT_NAME}, shape
    (huge,) = [r for r in evaluation if r.n == 200000]
    assert huge.name == grid.MAX_BIN_COUNT_NAME and huge.floor is None and not huge.with_reference
    assert huge.cap > 4.0  # the only row with a longer cap than the other large rows
    large = {(r.grid, r.shape) for r in grid.loss_rows() + grid.miner_rows() if (r.n, r.d) == grid.LARGE}
    assert {shape for _, shape in large} == set(grid.LARGE_SHAPES)
    assert {r.companion for r in grid.kmeans_rows()} == {"faiss"}


def test_shapes_option_selects_rows():
    rows = grid.loss_rows(("early",), quick=True)
    assert {r.shape for r in rows} == {"early"} and {r.n for r in rows} == {512}


def test_bench_quick_runs_one_row_per_family_on_two_shapes():
    rows = grid.quick_check_rows()
    assert sorted({r.shape for r in rows}) == ["early", "sop"]
    for shape in ("sop", "early"):
        families = [r.grid for r in rows if r.shape == shape]
        assert sorted(families) == ["evaluation", "losses", "miners", "training"]
    # sized for minutes, not the full grid's half hour
    assert all(r.n <= 2048 for r in rows if r.grid in ("losses", "miners"))
    assert all(r.n <= 10000 for r in rows if r.grid == "evaluation")
    (training,) = [r for r in rows if r.grid == "training" and r.shape == "sop"]
    assert training.kwargs == {"trunk": "mlp", "batch_size": 256, "shape": "sop"}
    assert grid.quick_check_rows(("cub",)) and {r.shape for r in grid.quick_check_rows(("cub",))} == {"cub"}


def test_bench_quick_prints_the_previous_run_next_to_this_one():
    import benchmarks.__main__ as bench

    now = dict(_entry("MultiSimilarityLoss", n=2048, ours=_ok(0.05), theirs=_ok(0.1), floor=_ok(0.02)),
               shape="sop")
    before = dict(now, deepmetric=_ok(0.1))
    lines = bench.compare_lines([now], [before]).splitlines()
    assert lines[0].split() == ["row", "shape", "N", "ours", "ms", "ref", "ms", "speed-up", "x", "floor",
                                "before", "ms", "change"]
    assert lines[1].split() == ["MultiSimilarityLoss", "sop", "2048", "50.0", "100.0", "2.00x", "2.5",
                                "100.0", "-50%"]
    assert bench.compare_lines([now], []).splitlines()[1].split()[-2:] == ["-", "-"]


def test_quick_run_regenerates_docs_between_markers(tmp_path, monkeypatch):
    import benchmarks.__main__ as bench

    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- bench:miners -->\nold\n<!-- /bench:miners -->\nend\n")
    monkeypatch.setattr(bench, "DOC", doc)
    bench.update_docs("miners", [_entry("M", ours=_ok(0.001), theirs=_ok(0.002))])
    text = doc.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| M | 512 | 128 | 1.0 | 2.0 | 2.0x |" in text
    # one block per shape, each with its heading (entries without a shape are the easy shape's)
    assert "#### miners on `easy`" in text
    bench.update_docs("miners", [dict(_entry("M", ours=_ok(0.001)), shape=s) for s in ("sop", "easy")])
    text = doc.read_text()
    assert text.index("#### miners on `easy`") < text.index("#### miners on `sop`")
    bench.update_docs("miners", [])
    assert "Not measured yet: run `make bench` (or `python -m benchmarks miners`)" in doc.read_text()


def test_command_line_defaults_to_every_grid_and_rejects_unknown_ones():
    import benchmarks.__main__ as bench
    from benchmarks import shapes

    assert bench.parse_args([]).grids == []
    assert bench.parse_args([]).shapes == list(shapes.NAMES)
    assert bench.parse_args(["miners"]).grids == ["miners"]
    assert bench.parse_args(["--shapes", "sop"]).shapes == ["sop"]
    with pytest.raises(SystemExit):
        bench.parse_args(["bogus"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--shapes", "imagenet"])


def _fake_measure(times):
    """A stand-in for harness.measure: ``times[library]`` is a list of medians, one per call."""
    calls = []

    def fake(workload, kwargs, **options):
        from benchmarks.harness import Result

        library = kwargs.get("library", "floor")
        calls.append((library, options))
        return Result("ok", median_s=times[library].pop(0), peak_extra_mb=1.0)

    return fake, calls


def test_measure_row_caps_the_reference_relative_to_deepmetric(monkeypatch):
    row = grid.Row("losses", "ContrastiveLoss", 2048, 128, "benchmarks.workloads:loss_step", {"case": "x"})
    caps = {"time_s": 30.0, "memory_gb": 6.0, "min_time": 0.3}
    for ours, expected_cap in ((0.05, 10.0), (0.2, 20.0), (1.0, 30.0)):
        fake, calls = _fake_measure({"deepmetric": [ours], "reference": [5 * ours]})
        monkeypatch.setattr(grid, "measure", fake)
        entry = grid.measure_row(row, {"reference": True}, {}, caps)
        assert [c[0] for c in calls] == ["deepmetric", "reference"]
        assert calls[0][1]["timeout_s"] == 30.0 and calls[1][1]["timeout_s"] == expected_cap
        assert grid.speedup(entry) == pytest.approx(5.0) and "measured_twice" not in entry


def test_measure_row_measures_close_calls_twice_keeping_each_sides_best(monkeypatch):
    row = grid.Row("losses", "ContrastiveLoss", 2048, 128, "benchmarks.workloads:loss_step", {"case": "x"},
                   floor=("benchmarks.workloads:matmul_floor", {"n": 2048, "d": 128}))
    fake, calls = _fake_measure({"deepmetric": [1.0, 0.8], "reference": [0.9, 1.2], "floor": [0.5]})
    monkeypatch.setattr(grid, "measure", fake)
    floors = {}
    entry = grid.measure_row(row, {"reference": True}, floors, {"time_s": 30.0, "memory_gb": 6.0, "min_time": 0.3})
    assert entry["measured_twice"] is True
    assert entry["deepmetric"]["median_s"] == 0.8 and entry["reference"]["median_s"] == 0.9
    assert entry["floor"]["median_s"] == 0.5 and len(floors) == 1
    # a second row with the same floor reuses it
    fake, calls = _fake_measure({"deepmetric": [1.0], "reference": [3.0]})
    monkeypatch.setattr(grid, "measure", fake)
    assert grid.measure_row(row, {"reference": True}, floors, {"time_s": 30.0, "memory_gb": 6.0,
                                                                "min_time": 0.3})["floor"]["median_s"] == 0.5
    assert [c[0] for c in calls] == ["deepmetric", "reference"]
