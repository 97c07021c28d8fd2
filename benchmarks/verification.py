"""Verification metrics and k-reciprocal re-ranking: deepmetric next to its floor and the dense way.

Run from the repository root (on a quiet machine):

    PYTHONPATH=src python -m benchmarks.verification [--sizes 50000] [--rerank-sizes 2000 20000]

Workloads (float32, D = 128, the ``sop`` shape of ``benchmarks/shapes.py`` split in two halves:
query and reference, N = M):

* verification (``roc_auc``, ``eer``, ``fnmr_at_fmr_1e-3`` over all N x M pairs):
  ``deepmetric verification`` (:func:`deepmetric.evaluation.verification.verification_metrics`,
  exact, bounded memory); ``floor``, the blocked ``q @ r.T`` alone, the matrix product no exact
  method avoids; ``sklearn dense``, the full N x M score vector and ``roc_auc_score`` on it (at
  N = M = 50,000: 2.5e9 scores, 10 GB of float32 before scikit-learn's own copies; the memory
  cap makes it report ``oom``).
* re-ranking (k1 = 20, k2 = 6, lambda = 0.3, top 100 kept): ``deepmetric rerank``
  (:func:`deepmetric.evaluation.rerank.k_reciprocal_rerank`, neighbour lists) and ``dense
  rerank``, the dense formulation of torchreid's ``re_ranking`` (:func:`dense_re_ranking`, a
  few N x N matrices and loops over items).

Each row runs in a fresh process through ``benchmarks.harness.measure`` (median time, peak extra
resident memory). Results go to ``benchmarks/results/verification.json``.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import measure

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "verification.json"
DIM = 128
METRICS = ("roc_auc", "eer", "fnmr_at_fmr_1e-3")
VERIFICATION = ("deepmetric verification", "floor", "sklearn dense")
RERANK = ("deepmetric rerank", "dense rerank")
RERANK_PARAMS = {"k1": 20, "k2": 6, "lambda_value": 0.3}
RERANK_KEEP = 100


def data(n, shape="sop"):
    """``(query, query_labels, reference, reference_labels)``: ``n`` of each."""
    from benchmarks import shapes

    x, labels = shapes.dataset(shape, 2 * n, DIM)
    return x[:n], labels[:n], x[n:], labels[n:]


def workload(backend, n, shape="sop"):
    """A callable doing one run of ``backend`` on ``n`` queries and ``n`` references."""
    q, ql, r, rl = data(n, shape)
    if backend == "deepmetric verification":
        from deepmetric.evaluation.verification import verification_metrics

        return lambda: verification_metrics(q, ql, r, rl, metrics=METRICS)
    if backend == "floor":

        def run():
            for s in range(0, n, 1024):
                q[s : s + 1024] @ r.t()

        return run
    if backend == "sklearn dense":
        from sklearn.metrics import roc_auc_score

        def run():
            scores = -(torch.cdist(q, r) ** 2).reshape(-1).numpy()
            positive = (ql[:, None] == rl[None, :]).reshape(-1).numpy()
            return roc_auc_score(positive, scores)

        return run
    if backend == "deepmetric rerank":
        from deepmetric.evaluation.rerank import k_reciprocal_rerank

        return lambda: k_reciprocal_rerank(q, r, k=RERANK_KEEP, **RERANK_PARAMS)
    if backend == "dense rerank":

        def run():
            qq, qr, rr = ((torch.cdist(a, b) ** 2).numpy() for a, b in ((q, q), (q, r), (r, r)))
            return dense_re_ranking(qr, qq, rr, **RERANK_PARAMS)

        return run
    raise ValueError(f"unknown backend {backend!r}")


def dense_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """The dense formulation of k-reciprocal re-ranking (Zhong et al. 2017) as torchreid's
    ``re_ranking`` computes it: ``(N + M)^2`` float32 matrices for the distances, the encoding
    ``V`` and the ranking, a loop over every item. Returns the ``(N, M)`` final distances."""
    dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)]
    ).astype(np.float32)
    dist = dist**2
    dist = (dist / dist.max(axis=0)).T
    total, nq = len(dist), q_g_dist.shape[0]
    rank = np.argsort(dist, axis=1, kind="stable")
    v = np.zeros_like(dist)
    half = int(np.around(k1 / 2.0))
    for i in range(total):
        forward = rank[i, : k1 + 1]
        mutual = forward[(rank[forward, : k1 + 1] == i).any(axis=1)]
        expansion = mutual
        for c in mutual:
            c_forward = rank[c, : half + 1]
            c_mutual = c_forward[(rank[c_forward, : half + 1] == c).any(axis=1)]
            if len(np.intersect1d(c_mutual, mutual)) > 2.0 / 3 * len(c_mutual):
                expansion = np.append(expansion, c_mutual)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(total)])
    shared = np.zeros((nq, total), dtype=np.float32)
    for i in range(nq):
        shared[i] = np.minimum(v[i][None, :], v).sum(axis=1)
    jaccard = 1 - shared / (2 - shared)
    final = jaccard * (1 - lambda_value) + dist[:nq] * lambda_value
    return final[:, nq:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50000], help="N = M, verification rows")
    parser.add_argument("--rerank-sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-cap-gb", type=float, default=16.0)
    parser.add_argument("--time-cap", type=float, default=1800.0)
    args = parser.parse_args(argv)
    plan = [(b, n) for n in args.sizes for b in VERIFICATION]
    plan += [(b, n) for n in args.rerank_sizes for b in RERANK]
    rows = []
    for backend, n in plan:
        result = measure(
            "benchmarks.verification:workload",
            {"backend": backend, "n": n},
            repeats=1,
            warmup=0,
            timeout_s=args.time_cap,
            memory_limit_gb=args.memory_cap_gb,
            threads=args.threads,
        )
        row = {"n": n, "dim": DIM, "backend": backend, **result.to_dict()}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


def table(rows):
    """A markdown table; each row's time next to that of deepmetric's row of the same N."""
    lines = ["| N = M | backend | median s | vs deepmetric | peak extra MB |", "|---:|---|---:|---:|---:|"]
    ours = {
        (r["n"], r["backend"] in RERANK): r["median_s"]
        for r in rows
        if r["backend"] in ("deepmetric verification", "deepmetric rerank") and r["status"] == "ok"
    }
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['n']} | {r['backend']} | {r['status']} | - | - |")
            continue
        base = ours.get((r["n"], r["backend"] in RERANK))
        ratio = f"{r['median_s'] / base:.2f}x" if base else "-"
        time, memory = f"{r['median_s']:.2f}", f"{r['peak_extra_mb']:.0f}"
        lines.append(f"| {r['n']} | {r['backend']} | {time} | {ratio} | {memory} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
