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
        _entry("A", ours=_ok(1.0), theirs=_ok(3.0)),
        _entry("B", ours=_ok(1.0), theirs=_ok(0.5)),
        _entry("C", ours=_ok(1.0), theirs=_ok(5.0)),
        _entry("D", n=4096, d=512, ours=_ok(1.0, mb=3000)),
    ]
    text = grid.summary(entries)
    assert "median speed-up 3.0x over 3 rows (target 3x: met)" in text
    assert "slower than the reference: B N=512" in text
    assert "D=512: D N=4096" in text
    assert "misses without a recorded reason: B N=512 (speed), D N=4096 (memory)" in text


def test_misses_say_by_how_much_and_the_cell_says_why(monkeypatch):
    from benchmarks import reasons, targets

    slow = _entry("Slow", ours=_ok(1.0), theirs=_ok(0.8))
    assert targets.misses(slow) == [("speed", "0.80x the reference's speed (20% slower)")]
    assert targets.missed_cell(slow) == "speed: 0.80x the reference's speed (20% slower); why: not yet explained"
    monkeypatch.setitem(reasons.WHY, ("Slow", "speed"), "validation costs")
    assert targets.missed_cell(slow).endswith("why: validation costs")
    pair = _entry("ContrastiveLoss", n=2048, ours=_ok(1.0), theirs=_ok(2.0), floor=_ok(0.1))
    assert targets.floor_target(pair) == 5.0
    assert targets.misses(pair) == [("floor", "10.0x its floor (target 5x)")]
    classification = _entry("ArcFaceLoss", n=2048, ours=_ok(1.0), floor=_ok(0.1))
    assert targets.floor_target(classification) is None and targets.misses(classification) == []
    evaluation = {"grid": "evaluation", "name": "AccuracyCalculator()", "n": 50000, "d": 128,
                  "deepmetric": {"status": "timeout", "detail": "over 120 s"}, "floor": _ok(6.0)}
    assert targets.misses(evaluation) == [("floor", "over the time cap (over 120 s; target 3x the floor)")]
    assert targets.missed_cell(_entry(ours=_ok(1.0), theirs=_ok(2.0))) == "-"


def test_a_missed_median_needs_a_reason_per_grid(monkeypatch):
    from benchmarks import reasons

    entries = [_entry("A", ours=_ok(1.0), theirs=_ok(2.0)), _entry("B", ours=_ok(1.0), theirs=_ok(1.5))]
    monkeypatch.delitem(reasons.MEDIAN_WHY, "losses", raising=False)
    text = grid.summary(entries)
    assert "(target 3x: missed)" in text
    assert text.endswith("misses without a recorded reason: the median (speed).")
    monkeypatch.setitem(reasons.MEDIAN_WHY, "losses", "the reference is near its floor")
    text = grid.summary(entries)
    assert "(target 3x: missed; why: the reference is near its floor)" in text
    assert "without a recorded reason" not in text


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


def test_every_loss_and_miner_case_has_a_row_per_size():
    rows = grid.loss_rows() + grid.miner_rows()
    names = {r.name for r in rows}
    assert {"ContrastiveLoss", "TripletMarginMiner"} <= names
    assert all(r.with_reference == ((r.n, r.d) != grid.LARGE) for r in rows)


def test_quick_run_regenerates_docs_between_markers(tmp_path, monkeypatch):
    import benchmarks.__main__ as bench

    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- bench:miners -->\nold\n<!-- /bench:miners -->\nend\n")
    monkeypatch.setattr(bench, "DOC", doc)
    bench.update_docs("miners", [_entry("M", ours=_ok(0.001), theirs=_ok(0.002))])
    text = doc.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| M | 512 | 128 | 1.0 | 2.0 | 2.0x |" in text


def test_command_line_defaults_to_every_grid_and_rejects_unknown_ones():
    import benchmarks.__main__ as bench

    assert bench.parse_args([]).grids == []
    assert bench.parse_args(["miners"]).grids == ["miners"]
    with pytest.raises(SystemExit):
        bench.parse_args(["bogus"])
