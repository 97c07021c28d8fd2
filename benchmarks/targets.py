"""The performance targets the grids are held to, and by how much a row misses them.

Targets, on every shape (``benchmarks/shapes.py``):

* speed: every row at least as fast as the reference (losses, miners, evaluation, training);
* median: in the loss and the miner grid, the median row at D=128 within 3x of its floor
  (per shape);
* floor: pair-based losses at N=2048, D=128 within 5x of their floor; ``AccuracyCalculator()``
  and ``AccuracyCalculator(k="max_bin_count")`` at N=50,000 within 3x of the kNN product floor;
* memory: every loss and miner at N=4096, D=512 within 2 GB of extra memory;
  ``AccuracyCalculator(k="max_bin_count")`` at N=200,000 within 3 GB;
* k-means: deepmetric's ``TorchKMeans`` within 2x of faiss' time on the same data, and its NMI
  against the labels at least faiss' minus 0.01.

A row that misses one says by how much here, and why in ``benchmarks/reasons.py``.
"""

from benchmarks import loss_cases, reasons

SMALL_SIZES = (512, 2048)
SMALL_WIDTH = 128
LARGE = (4096, 512)
SPEED_TARGET = 1.0
MEDIAN_FLOOR_TARGET = 3.0  # the median row within this many floors
MEDIAN_GRIDS = ("losses", "miners")
MEMORY_TARGET_MB = 2048
PAIR_LOSS_FLOOR_TARGET = (2048, 5.0)  # (N, at most this many times the floor)
EVALUATION_FLOOR_TARGET = (50000, 3.0)
EVALUATION_MEMORY_TARGET = (200000, 3072)  # (N, at most this many MB of extra memory)
KMEANS_TIME_TARGET = 2.0  # at most this many times faiss' time
KMEANS_NMI_TOLERANCE = 0.01  # NMI at least faiss' minus this
_PAIR_BASED = {case.name for case in loss_cases.CASES if case.pair_based}


def seconds(result):
    return result["median_s"] if result and result["status"] == "ok" else None


def speedup(entry):
    """reference time / deepmetric time, or None when either did not run."""
    ours, theirs = seconds(entry.get("deepmetric")), seconds(entry.get("reference"))
    return theirs / ours if ours and theirs else None


def floor_ratio(entry):
    """deepmetric time / floor time, or None."""
    ours, floor = seconds(entry.get("deepmetric")), seconds(entry.get("floor"))
    return ours / floor if ours and floor else None


def speedup_ceiling(entry):
    """reference time / floor time: the speed-up a deepmetric at its floor would reach."""
    theirs, floor = seconds(entry.get("reference")), seconds(entry.get("floor"))
    return theirs / floor if theirs and floor else None


def kmeans_time_ratio(entry):
    """deepmetric k-means time / faiss k-means time, or None."""
    ours, theirs = seconds(entry.get("deepmetric")), seconds(entry.get("faiss"))
    return ours / theirs if ours and theirs else None


def nmi(result):
    if not result or result.get("status") != "ok":
        return None
    return (result.get("report") or {}).get("nmi")


def floor_target(entry):
    """How many floors this row may take, or None when no floor target applies."""
    if entry["grid"] == "losses" and entry["name"] in _PAIR_BASED and entry["n"] == PAIR_LOSS_FLOOR_TARGET[0]:
        return PAIR_LOSS_FLOOR_TARGET[1] if entry["d"] == SMALL_WIDTH else None
    if entry["grid"] == "evaluation" and entry["n"] == EVALUATION_FLOOR_TARGET[0]:
        return EVALUATION_FLOOR_TARGET[1]
    return None


def memory_target(entry):
    """The most extra MB this row may take, or None when no memory target applies."""
    if entry["grid"] in ("losses", "miners") and (entry["n"], entry["d"]) == LARGE:
        return MEMORY_TARGET_MB
    if entry["grid"] == "evaluation" and entry["n"] == EVALUATION_MEMORY_TARGET[0]:
        return EVALUATION_MEMORY_TARGET[1]
    return None


def misses(entry):
    """``[(target, how much)]`` for every target this row misses."""
    if entry["grid"] == "kmeans":
        return _kmeans_misses(entry)
    found = []
    ratio = speedup(entry)
    if ratio is not None and ratio < SPEED_TARGET:
        found.append(("speed", f"{ratio:.2f}x the reference's speed ({(1 - ratio) * 100:.0f}% slower)"))
    ours = entry.get("deepmetric") or {}
    allowed = floor_target(entry)
    if allowed is not None:
        over = floor_ratio(entry)
        if over is not None and over > allowed:
            found.append(("floor", f"{over:.1f}x its floor (target {allowed:g}x)"))
        elif over is None and ours.get("status") == "timeout":
            cap = ours.get("detail", "")
            found.append(("floor", f"over the time cap ({cap}; target {allowed:g}x the floor)"))
    limit = memory_target(entry)
    if limit is not None:
        if ours.get("status") != "ok":
            found.append(("memory", f"did not finish ({ours.get('status')})"))
        elif ours["peak_extra_mb"] > limit:
            found.append(("memory", f"{ours['peak_extra_mb']:.0f} MB (target {limit} MB)"))
    return found


def _kmeans_misses(entry):
    found = []
    ours, theirs = entry.get("deepmetric") or {}, entry.get("faiss") or {}
    ratio = kmeans_time_ratio(entry)
    if ratio is not None and ratio > KMEANS_TIME_TARGET:
        found.append(("time", f"{ratio:.1f}x faiss' time (target {KMEANS_TIME_TARGET:g}x)"))
    elif ratio is None and ours.get("status") == "timeout" and seconds(theirs):
        found.append(("time", f"over the time cap ({ours.get('detail', '')}; faiss {seconds(theirs):.1f} s)"))
    ours_nmi, faiss_nmi = nmi(ours), nmi(theirs)
    if ours_nmi is not None and faiss_nmi is not None and ours_nmi < faiss_nmi - KMEANS_NMI_TOLERANCE:
        found.append(("quality", f"NMI {ours_nmi:.3f} against faiss' {faiss_nmi:.3f}"))
    return found


def missed_cell(entry):
    """The table cell: each missed target, by how much, and why."""
    parts = []
    for target, amount in misses(entry):
        why = reasons.why(entry["name"], target, entry["n"], entry.get("shape", "easy"))
        parts.append(f"{target}: {amount}; why: {why or 'not yet explained'}")
    return " / ".join(parts) if parts else "-"


def _median(values):
    """The middle row (the upper one of the two middle rows of an even count)."""
    return sorted(values)[len(values) // 2] if values else None


def median_floor_ratio(entries):
    """``(median of deepmetric time / floor, rows)`` over the rows at D=128 that have a floor."""
    ratios = [r for e in entries if e["d"] == SMALL_WIDTH and (r := floor_ratio(e)) is not None]
    return _median(ratios), len(ratios)


def median_speedup(entries):
    ratios = [r for e in entries if e["d"] == SMALL_WIDTH and (r := speedup(e)) is not None]
    return _median(ratios), len(ratios)


def median_ceiling(entries):
    """Median of reference/floor at D=128: no implementation at its floor beats this speed-up."""
    ceilings = [c for e in entries if e["d"] == SMALL_WIDTH and (c := speedup_ceiling(e)) is not None]
    return _median(ceilings), len(ceilings)

