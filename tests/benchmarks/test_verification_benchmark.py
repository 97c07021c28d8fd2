"""The verification and re-ranking benchmark's workloads, at a tiny size (no timing): each runs,
and the ones that compute the same thing agree."""

import numpy as np
import pytest

from benchmarks import verification as bench


def test_verification_rows_agree_at_a_tiny_size():
    pytest.importorskip("sklearn")
    ours = bench.workload("deepmetric verification", 60)()
    dense = bench.workload("sklearn dense", 60)()
    assert set(ours) == set(bench.METRICS)
    assert ours["roc_auc"] == pytest.approx(dense, abs=1e-6)
    bench.workload("floor", 60)()
    with pytest.raises(ValueError, match="unknown backend"):
        bench.workload("nothing", 60)


def test_rerank_rows_agree_at_a_tiny_size():
    values, indices = bench.workload("deepmetric rerank", 40)()
    dense = bench.workload("dense rerank", 40)()
    assert indices.shape == (40, min(bench.RERANK_KEEP, 40))
    assert np.abs(values.double().numpy() - np.sort(dense, axis=1)[:, : indices.shape[1]]).max() < 1e-5


def test_table_compares_each_row_with_deepmetric():
    rows = [
        {"n": 10, "backend": "deepmetric verification", "status": "ok", "median_s": 2.0, "peak_extra_mb": 5},
        {"n": 10, "backend": "floor", "status": "ok", "median_s": 1.0, "peak_extra_mb": 1},
        {"n": 10, "backend": "sklearn dense", "status": "oom", "median_s": None, "peak_extra_mb": None},
    ]
    text = bench.table(rows)
    assert "| 10 | floor | 1.00 | 0.50x | 1 |" in text and "| 10 | sklearn dense | oom |" in text
