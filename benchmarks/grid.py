"""The benchmark grids (losses, miners, evaluation): which rows exist, how each is measured, and the
tables they produce.

A row is one workload at one size. It is measured for deepmetric and, when installed, for the
reference library, each in its own child process (``benchmarks.harness.measure``), next to the
floor: the time of the dense matrix products that the row's computation cannot avoid, measured on
the same machine in the same run.
"""

from dataclasses import dataclass, field

from benchmarks import loss_cases, miner_cases
from benchmarks.harness import measure

SMALL_SIZES = (512, 2048)
SMALL_WIDTH = 128
LARGE = (4096, 512)  # every loss and miner must run here within 2 GB of extra memory
EVALUATION_SIZES = (2000, 10000, 50000)


@dataclass(frozen=True)
class Row:
    grid: str
    name: str
    n: int
    d: int
    workload: str
    kwargs: dict = field(default_factory=dict)
    floor: tuple = None  # (workload, kwargs) of the unavoidable dense work, or None
    with_reference: bool = True


def loss_rows(sizes=SMALL_SIZES, large=True):
    rows = []
    for case in loss_cases.CASES:
        floor_of = (
            (lambda n, d: ("benchmarks.workloads:matmul_floor", {"n": n, "d": d}))
            if case.pair_based
            else (lambda n, d: None)
        )
        shapes = [(n, SMALL_WIDTH, True) for n in sizes] + ([(*LARGE, False)] if large else [])
        for n, d, with_reference in shapes:
            kwargs = {"case": case.name, "n": n, "d": d}
            rows.append(
                Row(
                    "losses",
                    case.name,
                    n,
                    d,
                    "benchmarks.workloads:loss_step",
                    kwargs,
                    floor_of(n, d),
                    with_reference,
                )
            )
    return rows


def miner_rows(sizes=SMALL_SIZES, large=True):
    rows = []
    for case in miner_cases.CASES:
        shapes = [(n, SMALL_WIDTH, True) for n in sizes] + ([(*LARGE, False)] if large and case.large else [])
        for n, d, with_reference in shapes:
            kwargs = {"case": case.name, "n": n, "d": d}
            floor = ("benchmarks.workloads:matmul_floor", {"n": n, "d": d, "backward": False})
            rows.append(
                Row(
                    "miners",
                    case.name,
                    n,
                    d,
                    "benchmarks.workloads:miner_step",
                    kwargs,
                    floor,
                    with_reference,
                )
            )
    return rows


def evaluation_rows(sizes=EVALUATION_SIZES):
    return [
        Row(
            "evaluation",
            "AccuracyCalculator()",
            n,
            SMALL_WIDTH,
            "benchmarks.workloads:accuracy_step",
            {"n": n, "d": SMALL_WIDTH},
            ("benchmarks.workloads:knn_floor", {"n": n, "d": SMALL_WIDTH}),
        )
        for n in sizes
    ]


GRIDS = {"losses": loss_rows, "miners": miner_rows, "evaluation": evaluation_rows}


def measure_row(row, have_reference, floors, caps):
    """Measure one row; ``floors`` caches floor results across rows of the same shape."""
    options = {
        "timeout_s": caps["time_s"],
        "memory_limit_gb": caps["memory_gb"],
        "min_time": caps["min_time"],
        # Fast rows get many timed calls (up to about min_time seconds): a median of 5 calls of a
        # few milliseconds is mostly noise.
        "repeats": 50,
    }
    entry = {"grid": row.grid, "name": row.name, "n": row.n, "d": row.d}
    # Rows at the large size check the memory target: one call, with time for slow losses to finish.
    large = {**options, "timeout_s": 4 * caps["time_s"], "repeats": 1, "warmup": 0}
    ours = measure(
        row.workload,
        {"library": "deepmetric", **row.kwargs},
        **(large if (row.n, row.d) == LARGE else options),
    )
    entry["deepmetric"] = ours.to_dict()
    if row.with_reference and have_reference:
        theirs = measure(row.workload, {"library": "reference", **row.kwargs}, **options)
        entry["reference"] = theirs.to_dict()
    if row.floor is not None:
        key = (row.floor[0], tuple(sorted(row.floor[1].items())))
        if key not in floors:
            floors[key] = measure(*row.floor, **options).to_dict()
        entry["floor"] = floors[key]
    return entry


def _seconds(result):
    return result["median_s"] if result and result["status"] == "ok" else None


def _time_cell(result):
    if not result:
        return "not run"
    if result["status"] != "ok":
        return {"oom": "out of memory", "timeout": "over time cap"}.get(result["status"], result["status"])
    ms = result["median_s"] * 1000
    return f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"


def _memory_cell(result):
    if not result or result["status"] != "ok":
        return "-"
    return f"{result['peak_extra_mb']:.0f}"


def speedup(entry):
    """reference time / deepmetric time, or None when either did not run."""
    ours, theirs = _seconds(entry.get("deepmetric")), _seconds(entry.get("reference"))
    return theirs / ours if ours and theirs else None


def floor_ratio(entry):
    """deepmetric time / floor time, or None."""
    ours, floor = _seconds(entry.get("deepmetric")), _seconds(entry.get("floor"))
    return ours / floor if ours and floor else None


def table(entries):
    """A markdown table of one grid's entries."""
    lines = [
        "| row | N | D | deepmetric ms | reference ms | speed-up | floor ms | x floor "
        "| deepmetric extra MB | reference extra MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        ratio = speedup(e)
        if ratio is not None:
            speed = f"{ratio:.1f}x"
        elif _seconds(e.get("deepmetric")) and e.get("reference"):
            speed = "reference failed"
        else:
            speed = "-"
        over_floor = floor_ratio(e)
        floor_ms = _time_cell(e["floor"]) if e.get("floor") else "-"
        lines.append(
            f"| {e['name']} | {e['n']} | {e['d']} | {_time_cell(e.get('deepmetric'))} "
            f"| {_time_cell(e.get('reference'))} | {speed} | {floor_ms} "
            f"| {f'{over_floor:.1f}' if over_floor else '-'} | {_memory_cell(e.get('deepmetric'))} "
            f"| {_memory_cell(e.get('reference'))} |"
        )
    return "\n".join(lines)


def summary(entries):
    """One line per grid: median speed-up at the small sizes and how many rows missed a target."""
    ratios = sorted(r for e in entries if e["n"] in SMALL_SIZES and (r := speedup(e)) is not None)
    slower = [f"{e['name']} N={e['n']}" for e in entries if (r := speedup(e)) is not None and r < 1]
    over_memory = [
        f"{e['name']} N={e['n']} D={e['d']}"
        for e in entries
        if (e["n"], e["d"]) == LARGE
        and (e["deepmetric"]["status"] != "ok" or e["deepmetric"]["peak_extra_mb"] > 2048)
    ]
    parts = []
    if ratios:
        parts.append(f"median speed-up {ratios[len(ratios) // 2]:.1f}x over {len(ratios)} rows")
    parts.append("slower than the reference: " + (", ".join(slower) if slower else "none"))
    if any((e["n"], e["d"]) == LARGE for e in entries):
        parts.append("over 2 GB (or failed) at N=4096, D=512: " + (", ".join(over_memory) or "none"))
    return "; ".join(parts) + "."
