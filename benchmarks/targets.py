"""The performance targets the grids are held to, and by how much a row misses them.

Targets (issue 9): every row at least as fast as the reference; the median row at least 3x
faster at N in {512, 2048}; pair-based losses at N=2048 within 5x of their floor; evaluation at
N=50,000 within 3x of its floor; every loss and miner at N=4096, D=512 within 2 GB of extra
memory. A row that misses one says by how much here, and why in ``benchmarks/reasons.py``.
"""

from benchmarks import loss_cases, reasons

SMALL_SIZES = (512, 2048)
LARGE = (4096, 512)
SPEED_TARGET = 1.0
MEDIAN_TARGET = 3.0
MEMORY_TARGET_MB = 2048
PAIR_LOSS_FLOOR_TARGET = (2048, 5.0)  # (N, at most this many times the floor)
EVALUATION_FLOOR_TARGET = (50000, 3.0)
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


def floor_target(entry):
    """How many floors this row may take, or None when no floor target applies."""
    if entry["grid"] == "losses" and entry["name"] in _PAIR_BASED and entry["n"] == PAIR_LOSS_FLOOR_TARGET[0]:
        return PAIR_LOSS_FLOOR_TARGET[1]
    if entry["grid"] == "evaluation" and entry["n"] == EVALUATION_FLOOR_TARGET[0]:
        return EVALUATION_FLOOR_TARGET[1]
    return None


def misses(entry):
    """``[(target, how much)]`` for every target this row misses."""
    found = []
    ratio = speedup(entry)
    if ratio is not None and ratio < SPEED_TARGET:
        found.append(("speed", f"{ratio:.2f}x the reference's speed ({(1 - ratio) * 100:.0f}% slower)"))
    allowed = floor_target(entry)
    if allowed is not None:
        over = floor_ratio(entry)
        ours = entry.get("deepmetric") or {}
        if over is not None and over > allowed:
            found.append(("floor", f"{over:.1f}x its floor (target {allowed:g}x)"))
        elif over is None and ours.get("status") == "timeout":
            cap = ours.get("detail", "")
            found.append(("floor", f"over the time cap ({cap}; target {allowed:g}x the floor)"))
    if (entry["n"], entry["d"]) == LARGE and entry["grid"] in ("losses", "miners"):
        ours = entry.get("deepmetric") or {}
        if ours.get("status") != "ok":
            found.append(("memory", f"did not finish ({ours.get('status')})"))
        elif ours["peak_extra_mb"] > MEMORY_TARGET_MB:
            found.append(("memory", f"{ours['peak_extra_mb']:.0f} MB (target {MEMORY_TARGET_MB} MB)"))
    return found


def missed_cell(entry):
    """The table cell: each missed target, by how much, and why."""
    parts = []
    for target, amount in misses(entry):
        why = reasons.why(entry["name"], target, entry["n"])
        parts.append(f"{target}: {amount}; why: {why or 'not yet explained'}")
    return " / ".join(parts) if parts else "-"


def median_speedup(entries):
    ratios = sorted(r for e in entries if e["n"] in SMALL_SIZES and (r := speedup(e)) is not None)
    return (ratios[len(ratios) // 2], len(ratios)) if ratios else (None, 0)


def median_ceiling(entries):
    """Median of reference/floor at the small sizes: no implementation at its floor beats this."""
    ceilings = sorted(c for e in entries if e["n"] in SMALL_SIZES and (c := speedup_ceiling(e)) is not None)
    return (ceilings[len(ceilings) // 2], len(ceilings)) if ceilings else (None, 0)
