"""Run the benchmark grids: ``python -m benchmarks [losses] [miners] [evaluation] [kmeans] [training]``.

Each row is measured for deepmetric, for pytorch-metric-learning 2.9 when it is installed (faiss
for the k-means rows), and for its floor, every measurement in a fresh child process with
capped memory and time, on every input shape of ``benchmarks/shapes.py`` (``--shapes`` to pick
some). Results go to ``benchmarks/results/<grid>.json`` and the tables between the
``<!-- bench:<grid> -->`` markers of ``docs/performance.md`` are regenerated from them.

``--quick`` is a smoke run (smallest sizes only; results in ``benchmarks/results/smoke/``, the
docs untouched). ``--quick-check`` (``make bench-quick``)
measures one row per family (a loss, a miner, an evaluation, a training row) on two shapes and
prints them next to the previous ``--quick-check`` run (``benchmarks/results/quick.json``): run it
before and after a change.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from benchmarks import grid, shapes, targets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "performance.md"
QUICK = RESULTS / "quick.json"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="*", help=f"any of {', '.join(grid.GRIDS)} (default: all)")
    parser.add_argument("--shapes", nargs="+", default=list(shapes.NAMES), help="input shapes (default: all)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only (a smoke run)")
    parser.add_argument(
        "--quick-check", action="store_true",
        help="one row per family on two shapes, compared with the previous --quick-check run",
    )
    parser.add_argument("--only", nargs="*", default=None, help="row names to (re-)measure")
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per measurement")
    parser.add_argument("--memory-cap-gb", type=float, default=6.0, help="address space per measurement")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per row")
    parser.add_argument("--from-json", action="store_true", help="regenerate tables from saved results")
    parser.add_argument(
        "--plan", action="store_true", help="list the rows per grid and shape; measure nothing"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    unknown = [g for g in args.grids if g not in grid.GRIDS]
    if unknown:
        parser.error(f"unknown grid(s) {unknown}; choose from {', '.join(grid.GRIDS)}")
    bad = [s for s in args.shapes if s not in shapes.SHAPES]
    if bad:
        parser.error(f"unknown shape(s) {bad}; choose from {', '.join(shapes.NAMES)}")
    return args


def rows_for(name, args):
    return grid.GRIDS[name](args.shapes, quick=args.quick)


def installed():
    return {
        "reference": importlib.util.find_spec("pytorch_metric_learning") is not None,
        "faiss": importlib.util.find_spec("faiss") is not None,
    }


def caps_of(args):
    return {"time_s": args.time_cap, "memory_gb": args.memory_cap_gb, "min_time": args.min_time}


def measure_rows(rows, have, caps, label):
    floors, entries = {}, []
    for row in rows:
        started = time.perf_counter()
        entry = grid.measure_row(row, have, floors, caps)
        entries.append(entry)
        print(
            f"{label:10s} {row.shape:9s} {row.name:36s} N={row.n:<6d} D={row.d:<4d} "
            f"ours={entry['deepmetric']['status']:11s} ({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return entries


def run_grid(name, args, have):
    # A smoke run keeps its results apart: it must not replace the published ones.
    path = (RESULTS / "smoke" if args.quick else RESULTS) / f"{name}.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    if args.from_json:
        return old
    rows = [r for r in rows_for(name, args) if not args.only or r.name in args.only]
    entries = measure_rows(rows, have, caps_of(args), name)
    if args.only or set(args.shapes) != set(shapes.NAMES):
        # Re-measured rows replace their old versions; the others are kept.
        fresh = {grid.entry_key(e) for e in entries}
        entries = [e for e in old if grid.entry_key(e) not in fresh] + entries
        order = {row.key: i for i, row in enumerate(grid.GRIDS[name]())}
        entries.sort(key=lambda e: order.get(grid.entry_key(e), len(order)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": entries}, indent=1) + "\n")
    return entries


def update_docs(name, entries):
    """Replace the text between this grid's markers in docs/performance.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = DOC.read_text()
    if start not in text:
        text += f"\n## {name.capitalize()} (generated)\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{start}\n{grid.render(name, entries)}\n{end}{tail}")


# ------------------------------------------------------------------------------ quick check


def _ms(result):
    s = targets.seconds(result)
    return f"{s * 1000:.1f}" if s is not None else (result or {}).get("status", "-")


def compare_lines(entries, previous):
    """The quick check's table: each row's time, speed-up, floor ratio, and the previous run's
    time with the change in percent (negative: faster now)."""
    before = {grid.entry_key(e): e for e in previous}
    lines = [
        f"{'row':30s} {'shape':9s} {'N':>6s} {'ours ms':>9s} {'ref ms':>9s} {'speed-up':>8s} "
        f"{'x floor':>7s} {'before ms':>9s} {'change':>7s}"
    ]
    for e in entries:
        ratio, over = targets.speedup(e), targets.floor_ratio(e)
        old = before.get(grid.entry_key(e))
        now_s, old_s = targets.seconds(e.get("deepmetric")), targets.seconds((old or {}).get("deepmetric"))
        change = f"{(now_s / old_s - 1) * 100:+.0f}%" if now_s and old_s else "-"
        lines.append(
            f"{e['name'][:30]:30s} {e['shape']:9s} {e['n']:>6d} {_ms(e.get('deepmetric')):>9s} "
            f"{_ms(e.get('reference')):>9s} {f'{ratio:.2f}x' if ratio else '-':>8s} "
            f"{f'{over:.1f}' if over else '-':>7s} {_ms((old or {}).get('deepmetric')) if old else '-':>9s} "
            f"{change:>7s}"
        )
    return "\n".join(lines)


def quick_check(args, have):
    previous = json.loads(QUICK.read_text())["rows"] if QUICK.exists() else []
    selected = [s for s in args.shapes if s in ("sop", "early")] or args.shapes[:2]
    entries = measure_rows(grid.quick_check_rows(selected), have, caps_of(args), "quick")
    RESULTS.mkdir(parents=True, exist_ok=True)
    QUICK.write_text(json.dumps({"rows": entries}, indent=1) + "\n")
    print(compare_lines(entries, previous))
    if previous:
        print(f"\n'before' is the previous --quick-check run; this run replaced it in {QUICK.name}.")


def plan_lines(names, args):
    """Rows and child processes per grid and shape (close calls add two processes each)."""
    lines = [f"{'grid':10s} {'shape':9s} {'rows':>5s} {'processes':>9s}  sizes"]
    for name in names:
        rows = rows_for(name, args) if not args.quick_check else [
            r for r in grid.quick_check_rows() if r.grid == name
        ]
        floors = set()
        for shape in shapes.NAMES:
            group = [r for r in rows if r.shape == shape]
            if not group:
                continue
            count = 0
            for r in group:
                count += 1 + int(r.with_reference)
                if r.floor is not None and (r.floor[0], tuple(sorted(r.floor[1].items()))) not in floors:
                    floors.add((r.floor[0], tuple(sorted(r.floor[1].items()))))
                    count += 1
            sizes = sorted({(r.n, r.d) for r in group})
            listed = ", ".join(f"{n}x{d}" for n, d in sizes)
            lines.append(f"{name:10s} {shape:9s} {len(group):5d} {count:9d}  {listed}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.plan:
        print(plan_lines(args.grids or list(grid.GRIDS), args))
        return
    have = installed()
    if not have["reference"]:
        print("pytorch-metric-learning is not installed: reference columns stay empty", file=sys.stderr)
    if args.quick_check:
        quick_check(args, have)
        return
    for name in args.grids or list(grid.GRIDS):
        entries = run_grid(name, args, have)
        print(f"\n## {name}\n{grid.render(name, entries)}")
        if not (args.no_docs or args.quick):
            update_docs(name, entries)


if __name__ == "__main__":
    main()
