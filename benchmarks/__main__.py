"""Run the benchmark grids: ``python -m benchmarks [losses] [miners] [evaluation] [--quick]``.

Each row is measured for deepmetric, for pytorch-metric-learning 2.9 when it is installed, and for
its floor, every measurement in a fresh child process with capped memory and time. Results go to
``benchmarks/results/<grid>.json`` and the tables between the ``<!-- bench:<grid> -->`` markers of
``docs/performance.md`` are regenerated from them.
"""

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from benchmarks import grid

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "performance.md"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="*", help=f"any of {', '.join(grid.GRIDS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes only (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None, help="row names to (re-)measure")
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per measurement")
    parser.add_argument("--memory-cap-gb", type=float, default=6.0, help="address space per measurement")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per row")
    parser.add_argument("--from-json", action="store_true", help="regenerate tables from saved results")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)
    unknown = [g for g in args.grids if g not in grid.GRIDS]
    if unknown:
        parser.error(f"unknown grid(s) {unknown}; choose from {', '.join(grid.GRIDS)}")
    return args


def rows_for(name, quick):
    if quick:
        return (
            grid.GRIDS[name](sizes=(512,), large=False)
            if name != "evaluation"
            else grid.evaluation_rows((2000,))
        )
    return grid.GRIDS[name]()


def run_grid(name, args, have_reference):
    path = RESULTS / f"{name}.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    if args.from_json:
        return old
    caps = {"time_s": args.time_cap, "memory_gb": args.memory_cap_gb, "min_time": args.min_time}
    floors = {}
    entries = []
    for row in rows_for(name, args.quick):
        if args.only and row.name not in args.only:
            continue
        started = time.perf_counter()
        entry = grid.measure_row(row, have_reference, floors, caps)
        entries.append(entry)
        print(
            f"{name:10s} {row.name:36s} N={row.n:<6d} D={row.d:<4d} "
            f"ours={entry['deepmetric']['status']:11s} ({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    if args.only or args.quick:
        # Re-measured rows replace their old versions; the others are kept.
        fresh = {(e["name"], e["n"], e["d"]) for e in entries}
        entries = [e for e in old if (e["name"], e["n"], e["d"]) not in fresh] + entries
        order = {row_key: i for i, row_key in enumerate((r.name, r.n, r.d) for r in grid.GRIDS[name]())}
        entries.sort(key=lambda e: order.get((e["name"], e["n"], e["d"]), len(order)))
    RESULTS.mkdir(parents=True, exist_ok=True)
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
    body = f"{grid.summary(entries)}\n\n{grid.table(entries)}\n"
    DOC.write_text(f"{head}{start}\n{body}{end}{tail}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    have_reference = importlib.util.find_spec("pytorch_metric_learning") is not None
    if not have_reference:
        print("pytorch-metric-learning is not installed: reference columns stay empty", file=sys.stderr)
    for name in args.grids or list(grid.GRIDS):
        entries = run_grid(name, args, have_reference)
        print(f"\n## {name}\n{grid.summary(entries)}\n\n{grid.table(entries)}")
        if not args.no_docs:
            update_docs(name, entries)


if __name__ == "__main__":
    main()
