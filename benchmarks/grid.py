"""The benchmark grids (losses, miners, evaluation): which rows exist, how each is measured, and the
tables they produce.

A row is one workload at one size. It is measured for deepmetric and, when installed, for the
reference library, each in its own child process (``benchmarks.harness.measure``), next to the
floor: the time of the dense matrix products that the row's computation cannot avoid, measured on
the same machine in the same run.
"""

from dataclasses import dataclass, field

from benchmarks import loss_cases, miner_cases, reasons, targets
from benchmarks.harness import measure
from benchmarks.targets import LARGE, SMALL_SIZES, floor_ratio, speedup

SMALL_WIDTH = 128
LARGE_EVALUATION = 10000  # evaluation rows from this N on get one call and the longer cap
CLOSE_CALL = 0.1  # rows slower than the reference, or less than 10% faster, are measured twice
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
        shapes = [(n, SMALL_WIDTH, True) for n in sizes] + ([(*LARGE, False)] if large else [])
        for n, d, with_reference in shapes:
            kwargs = {"case": case.name, "n": n, "d": d}
            width = case.floor_rows(n, n // 8)  # the grid has 8 samples per class
            floor = None
            if width is not False:
                floor_kwargs = {"n": n, "d": d} if width is None else {"n": n, "d": d, "m": width}
                floor = ("benchmarks.workloads:matmul_floor", floor_kwargs)
            step = "benchmarks.workloads:loss_step"
            rows.append(Row("losses", case.name, n, d, step, kwargs, floor, with_reference))
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
        "repeats": 1000,
    }
    entry = {"grid": row.grid, "name": row.name, "n": row.n, "d": row.d}
    # Rows at the large size check the memory target: one call, with time for slow losses to finish.
    large = {**options, "timeout_s": 4 * caps["time_s"], "repeats": 1, "warmup": 0}
    if row.grid == "evaluation" and row.n >= LARGE_EVALUATION:
        # seconds per call: one timed call, no warm-up, the longer cap, for both libraries
        options = large
    ours = measure(
        row.workload,
        {"library": "deepmetric", **row.kwargs},
        **(large if (row.n, row.d) == LARGE else options),
    )
    entry["deepmetric"] = ours.to_dict()
    if row.with_reference and have_reference:
        theirs = measure(row.workload, {"library": "reference", **row.kwargs}, **options)
        entry["reference"] = theirs.to_dict()
        ratio = speedup(entry)
        if ratio is not None and ratio < 1 + CLOSE_CALL:
            # A miss or a close call is measured once more on both sides, each keeping its lower
            # median, so that a burst of noise during one measurement does not decide the row.
            for library in ("deepmetric", "reference"):
                again = measure(row.workload, {"library": library, **row.kwargs}, **options).to_dict()
                if targets.seconds(again) and again["median_s"] < entry[library]["median_s"]:
                    entry[library] = again
            entry["measured_twice"] = True
    if row.floor is not None:
        key = (row.floor[0], tuple(sorted(row.floor[1].items())))
        if key not in floors:
            floors[key] = measure(*row.floor, **options).to_dict()
        entry["floor"] = floors[key]
    return entry


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


def table(entries):
    """A markdown table of one grid's entries."""
    lines = [
        "| row | N | D | deepmetric ms | reference ms | speed-up | floor ms | x floor "
        "| deepmetric extra MB | reference extra MB | target missed: by how much; why |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        ratio = speedup(e)
        if ratio is not None:
            speed = f"{ratio:.1f}x"
        elif targets.seconds(e.get("deepmetric")) and e.get("reference"):
            speed = "reference failed"
        else:
            speed = "-"
        over_floor = floor_ratio(e)
        floor_ms = _time_cell(e["floor"]) if e.get("floor") else "-"
        lines.append(
            f"| {e['name']} | {e['n']} | {e['d']} | {_time_cell(e.get('deepmetric'))} "
            f"| {_time_cell(e.get('reference'))} | {speed} | {floor_ms} "
            f"| {f'{over_floor:.1f}' if over_floor else '-'} | {_memory_cell(e.get('deepmetric'))} "
            f"| {_memory_cell(e.get('reference'))} | {targets.missed_cell(e)} |"
        )
    return "\n".join(lines)


def summary(entries):
    """The grid's verdict on every target: the median speed-up, the rows slower than the
    reference, over their floor target or over 2 GB, and any miss without a recorded reason."""
    median, count = targets.median_speedup(entries)
    parts, unexplained = [], []
    if median is not None:
        missed_median = median < targets.MEDIAN_TARGET
        text = f"median speed-up {median:.1f}x over {count} rows (target {targets.MEDIAN_TARGET:g}x: "
        text += "missed" if missed_median else "met"
        ceiling, with_floor = targets.median_ceiling(entries)
        if ceiling is not None:
            text += f"; the reference's median row is {ceiling:.1f}x its floor ({with_floor} rows)"
        median_why = reasons.median_why(entries[0]["grid"]) if missed_median else None
        if median_why:
            text += f"; why: {median_why}"
        elif missed_median:
            unexplained.append("the median (speed)")
        parts.append(text + ")")
    missed = {kind: [] for kind in ("speed", "floor", "memory")}
    for e in entries:
        for kind, _ in targets.misses(e):
            missed[kind].append(f"{e['name']} N={e['n']}")
            if not reasons.why(e["name"], kind, e["n"]):
                unexplained.append(f"{e['name']} N={e['n']} ({kind})")
    parts.append("slower than the reference: " + (", ".join(missed["speed"]) or "none"))
    if any(targets.floor_target(e) for e in entries):
        parts.append("over the floor target: " + (", ".join(missed["floor"]) or "none"))
    if any((e["n"], e["d"]) == LARGE for e in entries):
        parts.append("over 2 GB (or failed) at N=4096, D=512: " + (", ".join(missed["memory"]) or "none"))
    if unexplained:
        parts.append("misses without a recorded reason: " + ", ".join(unexplained))
    return "; ".join(parts) + "."
