"""Exact kNN speed and memory: deepmetric ExactKNN next to faiss IndexFlatL2 and the reference.

Run from the repository root:

    PYTHONPATH=src python -m benchmarks.knn [--sizes 10000 50000] [--threads 2] [--shapes sop early]

Workload: self-retrieval as in ``AccuracyCalculator.get_accuracy(x, labels)``: the N embeddings
(float32, D=128) of each input shape of ``benchmarks/shapes.py`` are both query and reference,
``ref_includes_query=True``, k=10.
Each row runs in a fresh process through ``benchmarks.harness.measure`` (median time of the
repeats, peak extra resident memory). ``floor`` is the blocked ``q @ r.T`` alone: the matrix
multiply no exact method can avoid. Results go to ``benchmarks/results/knn.json``. The
reference's CustomKNN (batch_size=1024) is skipped above N=20000 unless ``--all`` (it is slow).
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks.harness import measure
from benchmarks.shapes import NAMES as SHAPE_NAMES

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "knn.json"
DIM = 128
K = 10
BACKENDS = ("deepmetric ExactKNN", "faiss IndexFlatL2", "reference FaissKNN", "reference CustomKNN", "floor")


def _data(n, shape):
    from benchmarks import shapes

    return shapes.dataset(shape, n, DIM)[0]


def workload(backend, n, shape="easy"):
    """Return a callable doing one k-NN search of ``backend`` on the N x 128 set of ``shape``."""

    x = _data(n, shape)
    if backend == "deepmetric ExactKNN":
        from deepmetric.evaluation.knn import ExactKNN

        knn = ExactKNN()
        return lambda: knn(x, K, x, True)
    if backend == "faiss IndexFlatL2":
        import faiss

        data = x.numpy()

        def run():
            index = faiss.IndexFlatL2(DIM)
            index.add(data)
            return index.search(data, K + 1)

        return run
    if backend == "reference FaissKNN":
        from pytorch_metric_learning.utils.inference import FaissKNN

        knn = FaissKNN()
        return lambda: knn(x, K, x, True)
    if backend == "reference CustomKNN":
        from pytorch_metric_learning.distances import LpDistance
        from pytorch_metric_learning.utils.inference import CustomKNN

        # batch_size keeps the reference's matrix to 1024 x N (the full N x N would not fit).
        knn = CustomKNN(LpDistance(normalize_embeddings=False, power=2), batch_size=1024)
        return lambda: knn(x, K, x, True)
    if backend == "floor":

        def run():
            for s in range(0, n, 1024):
                x[s : s + 1024] @ x.t()

        return run
    raise ValueError(f"unknown backend {backend!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--shapes", nargs="+", default=list(SHAPE_NAMES), help="input shapes (default: all)")
    parser.add_argument(
        "--all", action="store_true", help="also run the slow reference CustomKNN above N=20000"
    )
    args = parser.parse_args(argv)
    rows = []
    for shape, n in ((shape, n) for shape in args.shapes for n in args.sizes):
        # The big size gets a single timed run to keep the whole benchmark short.
        repeats, warmup = (3, 1) if n <= 10000 else (1, 0)
        for backend in args.backends:
            if backend == "reference CustomKNN" and n > 20000 and not args.all:
                continue
            if backend == "floor" and any(r["backend"] == "floor" and r["n"] == n for r in rows):
                # the product does not depend on the shape: measured once per N
                measured = next(r for r in rows if r["backend"] == "floor" and r["n"] == n)
                rows.append({**measured, "shape": shape})
                continue
            result = measure(
                "benchmarks.knn:workload",
                {"backend": backend, "n": n, "shape": shape},
                repeats=repeats,
                warmup=warmup,
                timeout_s=120,
                memory_limit_gb=8,
                threads=args.threads,
            )
            row = {"shape": shape, "n": n, "dim": DIM, "k": K, "backend": backend, **result.to_dict()}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


def table(rows):
    lines = [
        "| shape | N | backend | median s | vs ExactKNN | peak extra MB |",
        "|---|---:|---|---:|---:|---:|",
    ]
    ours = {
        (r.get("shape", "easy"), r["n"]): r["median_s"]
        for r in rows
        if r["backend"] == BACKENDS[0] and r["status"] == "ok"
    }
    for r in rows:
        shape = r.get("shape", "easy")
        if r["status"] != "ok":
            lines.append(f"| {shape} | {r['n']} | {r['backend']} | {r['status']} | - | - |")
            continue
        base = ours.get((shape, r["n"]))
        ratio = f"{r['median_s'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {shape} | {r['n']} | {r['backend']} | {r['median_s']:.2f} | {ratio} "
            f"| {r['peak_extra_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
