"""AccuracyCalculator() with its defaults, deepmetric next to pytorch-metric-learning.

Run from the repository root:

    PYTHONPATH=src python -m benchmarks.accuracy [--sizes 2000 10000] [--threads 1] [--shapes sop]

Both libraries run ``AccuracyCalculator(device=cpu).get_accuracy(x, labels)`` with every default
metric and the default ``k=None`` (each query ranks the whole set): deepmetric with its own exact
kNN (and faiss k-means when faiss is installed, else its torch port), the reference with faiss
(IndexFlatL2 and faiss k-means). Inputs: float32, D=128, the sets of every input shape of
``benchmarks/shapes.py``. Each measurement runs in a fresh process (benchmarks/harness.py):
median wall time and peak extra resident memory.
"""

import argparse
import json
from pathlib import Path

from benchmarks.harness import measure
from benchmarks.shapes import NAMES as SHAPE_NAMES

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy.json"


def workload(library, n, d=128, shape="easy", **kwargs):
    import torch

    from benchmarks import shapes

    if library == "deepmetric":
        from deepmetric.evaluation.accuracy_calculator import AccuracyCalculator
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    x, labels = shapes.dataset(shape, n, d)
    calculator = AccuracyCalculator(device=torch.device("cpu"), **kwargs)
    return lambda: calculator.get_accuracy(x, labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", default=None, help="None, an int or max_bin_count")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPE_NAMES), help="input shapes (default: all)")
    args = parser.parse_args()
    k = int(args.k) if args.k and args.k.isdigit() else args.k
    options = {} if k is None else {"k": k}
    rows = []
    for shape, n in ((shape, n) for shape in args.shapes for n in args.sizes):
        row = {"shape": shape, "n": n}
        for library in ("deepmetric", "reference"):
            result = measure(
                "benchmarks.accuracy:workload",
                {"library": library, "n": n, "shape": shape, **options},
                repeats=args.repeats,
                warmup=0,
                timeout_s=900,
                memory_limit_gb=16,
                threads=args.threads,
            )
            row[library] = result.to_dict()
        ours, theirs = row["deepmetric"], row["reference"]
        if ours["status"] == theirs["status"] == "ok":
            row["time_ratio"] = ours["median_s"] / theirs["median_s"]
        rows.append(row)
        print(json.dumps(row))
    path = RESULTS if k is None else RESULTS.with_name(f"accuracy_k_{k}.json")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"threads": args.threads, "k": k, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
