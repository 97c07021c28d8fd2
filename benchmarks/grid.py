"""The benchmark grids (losses, miners, evaluation, k-means, training): which rows exist, how each
is measured, and the tables they produce.

A row is one workload at one size on one input shape (``benchmarks/shapes.py``), keyed by
(name, shape, N, D). It is measured for deepmetric and, when installed, for the reference
library (faiss for the k-means rows), each in its own child process
(``benchmarks.harness.measure``), next to the floor: the time of the dense matrix products that
the row's computation cannot avoid, measured on the same machine in the same run.

Which sizes run on which shape (the whole grid has to fit in about half an hour on two cores):
the ``easy`` shape keeps the original sizes (losses and miners at N=512 and 2048, evaluation at
N=2,000, 10,000 and 50,000); the other shapes run the sizes the targets name (N=2048 for losses
and miners, N=50,000 for evaluation). The memory rows (N=4096, D=512) run on ``LARGE_SHAPES``;
the N=200,000 evaluation row on ``easy`` only.
"""

from dataclasses import dataclass, field

from benchmarks import loss_cases, miner_cases, reasons, shapes, targets
from benchmarks.harness import measure
from benchmarks.targets import LARGE, SMALL_SIZES, SMALL_WIDTH, floor_ratio, speedup

CLOSE_CALL = 0.1  # rows slower than the reference, or less than 10% faster, are measured twice
# The reference's time cap on a row deepmetric finished: this many times deepmetric's call, at least
# REFERENCE_MIN_CAP_S, at most the row's cap. A reference that needs 100x longer has made the
# row's point; waiting for it would cost minutes per shape.
REFERENCE_CAP_FACTOR = 100
REFERENCE_MIN_CAP_S = 10.0
SIZES = {"easy": SMALL_SIZES}  # loss and miner sizes at D=128 per shape ...
DEFAULT_SIZES = (2048,)  # ... and for the shapes not listed
LARGE_SHAPES = ("easy", "sop", "early")  # shapes with the N=4096, D=512 memory rows
EVALUATION_SIZES = {"easy": (2000, 10000, 50000)}  # AccuracyCalculator() per shape ...
EVALUATION_DEFAULT_SIZES = (50000,)  # ... for the other shapes
MAX_BIN_COUNT_SIZES = {"easy": (50000, 200000)}
LARGE_EVALUATION = 10000  # evaluation rows from this N on get one call and the longer cap
HUGE_EVALUATION = 200000  # ... and from this N on a much longer cap, no reference and no floor
KMEANS_SIZE = 50000
TRAINING_TRUNKS = (("MLP", "mlp"), ("ConvNet", "convnet"))
# The ConvNet rows differ from the MLP rows by the trunk, whose cost does not depend on the labels:
# two shapes show it.
CONVNET_SHAPES = ("easy", "sop")
TRAINING_BATCHES = (256, 1024)
DEFAULT_NAME = "AccuracyCalculator()"
MAX_BIN_COUNT_NAME = 'AccuracyCalculator(k="max_bin_count")'


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
    shape: str = "easy"
    once: bool = False  # one timed call without warm-up (slow rows)
    cap: float = 1.0  # times the time cap
    min_time: float = 1.0  # times the min-time
    companion: str = "reference"  # the other side: "reference" (the reference library) or "faiss"

    @property
    def key(self):
        return (self.name, self.shape, self.n, self.d)


def entry_key(entry):
    return (entry["name"], entry.get("shape", "easy"), entry["n"], entry["d"])


def _selected(names):
    return [name for name in shapes.NAMES if name in names]


def loss_rows(shape_names=shapes.NAMES, quick=False):
    rows = []
    for shape in _selected(shape_names):
        sizes = [(512, SMALL_WIDTH)] if quick else [(n, SMALL_WIDTH) for n in SIZES.get(shape, DEFAULT_SIZES)]
        if not quick and shape in LARGE_SHAPES:
            sizes.append(LARGE)
        for case in loss_cases.CASES:
            for n, d in sizes:
                large = (n, d) == LARGE
                kwargs = {"case": case.name, "n": n, "d": d, "shape": shape}
                width = case.floor_rows(n, shapes.batch_num_classes(shape, n))
                floor = None
                if width is not False:
                    floor_kwargs = {"n": n, "d": d} if width is None else {"n": n, "d": d, "m": width}
                    floor = ("benchmarks.workloads:matmul_floor", floor_kwargs)
                rows.append(
                    Row("losses", case.name, n, d, "benchmarks.workloads:loss_step", kwargs, floor,
                        with_reference=not large, shape=shape, once=large, cap=4.0 if large else 1.0)
                )
    return rows


def miner_rows(shape_names=shapes.NAMES, quick=False):
    rows = []
    for shape in _selected(shape_names):
        sizes = [(512, SMALL_WIDTH)] if quick else [(n, SMALL_WIDTH) for n in SIZES.get(shape, DEFAULT_SIZES)]
        for case in miner_cases.CASES:
            case_sizes = sizes + ([LARGE] if not quick and shape in LARGE_SHAPES and case.large else [])
            for n, d in case_sizes:
                large = (n, d) == LARGE
                kwargs = {"case": case.name, "n": n, "d": d, "shape": shape}
                floor = ("benchmarks.workloads:matmul_floor", {"n": n, "d": d, "backward": False})
                rows.append(
                    Row("miners", case.name, n, d, "benchmarks.workloads:miner_step", kwargs, floor,
                        with_reference=not large, shape=shape, once=large, cap=4.0 if large else 1.0)
                )
    return rows


def _evaluation_row(name, shape, n, k):
    kwargs = {"n": n, "d": SMALL_WIDTH, "shape": shape}
    if k is not None:
        kwargs["k"] = k
    huge = n >= HUGE_EVALUATION
    floor = None if huge else ("benchmarks.workloads:knn_floor", {"n": n, "d": SMALL_WIDTH})
    return Row(
        "evaluation", name, n, SMALL_WIDTH, "benchmarks.workloads:accuracy_step", kwargs, floor,
        with_reference=not huge, shape=shape, once=n >= LARGE_EVALUATION,
        cap=20.0 if huge else 4.0 if n >= LARGE_EVALUATION else 1.0,
    )


def evaluation_rows(shape_names=shapes.NAMES, quick=False):
    rows = []
    for shape in _selected(shape_names):
        defaults = (2000,) if quick else EVALUATION_SIZES.get(shape, EVALUATION_DEFAULT_SIZES)
        by_bin = (2000,) if quick else MAX_BIN_COUNT_SIZES.get(shape, EVALUATION_DEFAULT_SIZES)
        rows += [_evaluation_row(DEFAULT_NAME, shape, n, None) for n in defaults]
        rows += [_evaluation_row(MAX_BIN_COUNT_NAME, shape, n, "max_bin_count") for n in by_bin]
    return rows


def kmeans_rows(shape_names=shapes.NAMES, quick=False):
    n = 2000 if quick else KMEANS_SIZE
    return [
        Row("kmeans", "k-means (niter=20)", n, SMALL_WIDTH, "benchmarks.workloads:kmeans_step",
            {"shape": shape, "n": n, "d": SMALL_WIDTH}, shape=shape, once=True, cap=4.0, companion="faiss")
        for shape in _selected(shape_names)
    ]


def training_rows(shape_names=shapes.NAMES, quick=False):
    rows = []
    trunks = TRAINING_TRUNKS[:1] if quick else TRAINING_TRUNKS
    batches = TRAINING_BATCHES[:1] if quick else TRAINING_BATCHES
    for shape in _selected(shape_names):
        for label, trunk in trunks:
            if trunk == "convnet" and shape not in CONVNET_SHAPES:
                continue
            for batch in batches:
                kwargs = {"trunk": trunk, "batch_size": batch, "shape": shape}
                rows.append(
                    Row("training", f"MetricLossOnly {label}", batch, 128, "benchmarks.training:train_step",
                        kwargs, shape=shape, cap=2.0, min_time=2.0)
                )
        rows.append(
            Row("training", "MPerClassSampler pass", TRAINING_BATCHES[0], 128,
                "benchmarks.training:sampler_pass", {"batch_size": TRAINING_BATCHES[0], "shape": shape},
                shape=shape)
        )
    return rows


GRIDS = {
    "losses": loss_rows,
    "miners": miner_rows,
    "evaluation": evaluation_rows,
    "kmeans": kmeans_rows,
    "training": training_rows,
}


def quick_check_rows(shape_names=("sop", "early")):
    """``make bench-quick``: one row per family (a loss, a miner, an evaluation, a training row)
    on each of ``shape_names``, sized to finish in a minute or two."""
    rows = []
    for shape in _selected(shape_names):
        rows += [r for r in loss_rows((shape,)) if r.name == "MultiSimilarityLoss" and r.n == 2048]
        rows += [r for r in miner_rows((shape,)) if r.name == "MultiSimilarityMiner" and r.n == 2048]
        rows.append(_evaluation_row(DEFAULT_NAME, shape, LARGE_EVALUATION, None))
        rows += [r for r in training_rows((shape,), quick=True) if r.name.startswith("MetricLossOnly")]
    return rows


def measure_row(row, have, floors, caps):
    """Measure one row. ``have`` says which companions are installed ({"reference": bool,
    "faiss": bool}); ``floors`` caches floor results across rows of the same shape."""
    options = {
        "timeout_s": caps["time_s"] * row.cap,
        "memory_limit_gb": caps["memory_gb"],
        "min_time": caps["min_time"] * row.min_time,
        # Fast rows get many timed calls (up to about min_time seconds): a median of 5 calls of a
        # few milliseconds is mostly noise.
        "repeats": 1000,
    }
    if row.once:
        # Slow rows: one timed call, no warm-up, with time for slow code to finish.
        options = {**options, "repeats": 1, "warmup": 0}
    entry = {"grid": row.grid, "name": row.name, "shape": row.shape, "n": row.n, "d": row.d}
    ours = measure(row.workload, {"library": "deepmetric", **row.kwargs}, **options)
    entry["deepmetric"] = ours.to_dict()
    other = row.companion
    if row.with_reference and have.get(other):
        their_options = options
        ours_s = targets.seconds(entry["deepmetric"])
        if other == "reference" and ours_s is not None:
            cap = min(options["timeout_s"], max(REFERENCE_MIN_CAP_S, REFERENCE_CAP_FACTOR * ours_s))
            their_options = {**options, "timeout_s": cap}
        theirs = measure(row.workload, {"library": other, **row.kwargs}, **their_options)
        entry[other] = theirs.to_dict()
        ratio = speedup(entry)
        if other == "reference" and ratio is not None and ratio < 1 + CLOSE_CALL:
            # A miss or a close call is measured once more on both sides, each keeping its lower
            # median, so that a burst of noise during one measurement does not decide the row.
            for library in ("deepmetric", "reference"):
                again = measure(row.workload, {"library": library, **row.kwargs}, **their_options).to_dict()
                if targets.seconds(again) and again["median_s"] < entry[library]["median_s"]:
                    entry[library] = again
            entry["measured_twice"] = True
    if row.floor is not None:
        # Loss and miner floors are fast: timed like a small row even for the one-call rows.
        floor_options = options if row.grid == "evaluation" else {**options, "repeats": 1000, "warmup": 1}
        key = (row.floor[0], tuple(sorted(row.floor[1].items())))
        if key not in floors:
            floors[key] = measure(*row.floor, **floor_options).to_dict()
        entry["floor"] = floors[key]
    return entry


# ------------------------------------------------------------------------------ tables


def _time_cell(result, scale=1000.0):
    if not result:
        return "not run"
    if result["status"] != "ok":
        return {"oom": "out of memory", "timeout": "over time cap"}.get(result["status"], result["status"])
    value = result["median_s"] * scale
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _memory_cell(result):
    if not result or result["status"] != "ok":
        return "-"
    return f"{result['peak_extra_mb']:.0f}"


def _speed_cell(entry):
    ratio = speedup(entry)
    if ratio is not None:
        return f"{ratio:.1f}x"
    if targets.seconds(entry.get("deepmetric")) and entry.get("reference"):
        return "reference failed"
    return "-"


def table(entries):
    """A markdown table of one grid's entries on one shape (losses, miners, evaluation)."""
    lines = [
        "| row | N | D | deepmetric ms | reference ms | speed-up | floor ms | x floor "
        "| deepmetric extra MB | reference extra MB | target missed: by how much; why |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        over_floor = floor_ratio(e)
        floor_ms = _time_cell(e["floor"]) if e.get("floor") else "-"
        lines.append(
            f"| {e['name']} | {e['n']} | {e['d']} | {_time_cell(e.get('deepmetric'))} "
            f"| {_time_cell(e.get('reference'))} | {_speed_cell(e)} | {floor_ms} "
            f"| {f'{over_floor:.1f}' if over_floor else '-'} | {_memory_cell(e.get('deepmetric'))} "
            f"| {_memory_cell(e.get('reference'))} | {targets.missed_cell(e)} |"
        )
    return "\n".join(lines)


def _nmi_cell(result):
    value = targets.nmi(result)
    return "-" if value is None else f"{value:.3f}"


def kmeans_table(entries):
    lines = [
        "| row | N | D | clusters | deepmetric s | faiss s | x faiss | deepmetric NMI | faiss NMI "
        "| deepmetric extra MB | faiss extra MB | target missed: by how much; why |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        ratio = targets.kmeans_time_ratio(e)
        report = (e.get("deepmetric") or {}).get("report") or (e.get("faiss") or {}).get("report") or {}
        lines.append(
            f"| {e['name']} | {e['n']} | {e['d']} | {report.get('clusters', '-')} "
            f"| {_time_cell(e.get('deepmetric'), 1.0)} | {_time_cell(e.get('faiss'), 1.0)} "
            f"| {f'{ratio:.2f}x' if ratio else '-'} | {_nmi_cell(e.get('deepmetric'))} "
            f"| {_nmi_cell(e.get('faiss'))} | {_memory_cell(e.get('deepmetric'))} "
            f"| {_memory_cell(e.get('faiss'))} | {targets.missed_cell(e)} |"
        )
    return "\n".join(lines)


def training_table(entries):
    """Time per iteration side by side, then each library's split of the mean iteration."""
    lines = [
        "| row | batch | deepmetric ms | reference ms | speed-up | deepmetric extra MB "
        "| reference extra MB | target missed: by how much; why |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['name']} | {e['n']} | {_time_cell(e.get('deepmetric'))} "
            f"| {_time_cell(e.get('reference'))} "
            f"| {_speed_cell(e)} | {_memory_cell(e.get('deepmetric'))} | {_memory_cell(e.get('reference'))} "
            f"| {targets.missed_cell(e)} |"
        )
    from benchmarks.training import PHASES

    split = [
        "| row | batch | library | mean ms | " + " | ".join(PHASES) + " |",
        "|---|---:|---|---:|" + "---:|" * len(PHASES),
    ]
    for e in entries:
        for library in ("deepmetric", "reference"):
            result = e.get(library) or {}
            report = result.get("report") if result.get("status") == "ok" else None
            if not report:
                continue
            phases = " | ".join(f"{report['phases_ms'][p]:.1f}" for p in PHASES)
            split.append(f"| {e['name']} | {e['n']} | {library} | {report['mean_ms']:.1f} | {phases} |")
    if len(split) == 2:
        return "\n".join(lines)
    note = "Time per phase (mean ms per iteration; the phases add up to the mean):"
    return "\n".join(lines) + f"\n\n{note}\n\n" + "\n".join(split)


TABLES = {"kmeans": kmeans_table, "training": training_table}


def summary(entries):
    """One grid's verdict on one shape: the median row over its floor, the rows slower than the
    reference, over their floor or memory target, and any miss without a recorded reason."""
    grid = entries[0]["grid"]
    shape = entries[0].get("shape", "easy")
    parts, unexplained = [], []
    if grid in targets.MEDIAN_GRIDS:
        median, count = targets.median_floor_ratio(entries)
        if median is not None:
            missed_median = median > targets.MEDIAN_FLOOR_TARGET
            text = (
                f"median row {median:.1f}x its floor over {count} rows at D={SMALL_WIDTH} "
                f"(target {targets.MEDIAN_FLOOR_TARGET:g}x: {'missed' if missed_median else 'met'}"
            )
            ceiling, with_floor = targets.median_ceiling(entries)
            if ceiling is not None:
                text += f"; the reference's median row is {ceiling:.1f}x its floor ({with_floor} rows)"
            median_why = reasons.median_why(grid, shape) if missed_median else None
            if median_why:
                text += f"; why: {median_why}"
            elif missed_median:
                unexplained.append("the median (floor)")
            parts.append(text + ")")
        speed, speed_count = targets.median_speedup(entries)
        if speed is not None:
            parts.append(f"median speed-up {speed:.1f}x over {speed_count} rows")
    labels = {
        "speed": "slower than the reference",
        "floor": "over the floor target",
        "memory": "over the memory target (or failed)",
        "time": f"over {targets.KMEANS_TIME_TARGET:g}x faiss' time",
        "quality": f"NMI more than {targets.KMEANS_NMI_TOLERANCE:g} below faiss'",
    }
    missed = {kind: [] for kind in labels}
    for e in entries:
        for kind, _ in targets.misses(e):
            missed[kind].append(f"{e['name']} N={e['n']}")
            if not reasons.why(e["name"], kind, e["n"], shape):
                unexplained.append(f"{e['name']} N={e['n']} ({kind})")
    applies = {
        "speed": grid != "kmeans",
        "floor": any(targets.floor_target(e) for e in entries),
        "memory": any(targets.memory_target(e) for e in entries),
        "time": grid == "kmeans",
        "quality": grid == "kmeans",
    }
    for kind, label in labels.items():
        if applies[kind] or missed[kind]:
            parts.append(f"{label}: " + (", ".join(missed[kind]) or "none"))
    if unexplained:
        parts.append("misses without a recorded reason: " + ", ".join(unexplained))
    return "; ".join(parts) + "."


def by_shape(entries):
    """``{shape: entries}`` in the order of ``shapes.NAMES``."""
    groups = {}
    for e in entries:
        groups.setdefault(e.get("shape", "easy"), []).append(e)
    return {name: groups[name] for name in shapes.NAMES if name in groups}


def render(grid, entries):
    """A grid's markdown: for every shape a heading, the summary line and the table."""
    if not entries:
        return f"Not measured yet: run `make bench` (or `python -m benchmarks {grid}`) on a quiet machine."
    make_table = TABLES.get(grid, table)
    blocks = []
    for shape, group in by_shape(entries).items():
        heading = f"#### {grid} on `{shape}`: {shapes.get(shape).summary}"
        blocks.append(f"{heading}\n\n{summary(group)}\n\n{make_table(group)}")
    return "\n\n".join(blocks)
