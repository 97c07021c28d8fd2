"""Re-identification protocol: CMC@k, mAP and mINP with the Market-1501 gallery exclusion, equal
to torchreid's eval_market1501 (written here from its published definition) on small sets."""

import numpy as np
import pytest
import torch

from deepmetric.distances import CosineSimilarity
from deepmetric.evaluation.reid import reid_metrics


def eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid's evaluation loop: per query, drop gallery items of the same identity and
    camera, then CMC, AP and INP of the remaining ranking (stable order for equal distances)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw_cmc = matches[q][keep]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        last = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
        all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
    return np.asarray(all_cmc, dtype=np.float64).mean(0), np.mean(all_ap), np.mean(all_inp), len(all_ap)


def _market(seed, dtype, n=40, m=120, d=8, ids=12, cams=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids, d, generator=g)
    q_pids, g_pids = torch.randint(0, ids, (n,), generator=g), torch.randint(0, ids, (m,), generator=g)
    q_cams, g_cams = torch.randint(0, cams, (n,), generator=g), torch.randint(0, cams, (m,), generator=g)
    q = centres[q_pids] + 0.9 * torch.randn(n, d, generator=g)
    r = centres[g_pids] + 0.9 * torch.randn(m, d, generator=g)
    return q.to(dtype), q_pids, r.to(dtype), g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(3))
def test_equal_to_eval_market1501(seed, dtype):
    q, qp, r, gp, qc, gc = _market(seed, dtype)
    got = reid_metrics(q, qp, r, gp, qc, gc, cmc_ranks=(1, 5, 10), memory_budget_bytes=3 * 24 * 120 * 7)
    distmat = (torch.cdist(q.double(), r.double()) ** 2).numpy()
    cmc, mean_ap, minp, valid = eval_market1501(distmat, qp.numpy(), gp.numpy(), qc.numpy(), gc.numpy(), 50)
    assert got["valid_queries"] == valid
    for k in (1, 5, 10):
        assert got[f"cmc_at_{k}"] == pytest.approx(cmc[k - 1], abs=1e-6)
    assert got["mAP"] == pytest.approx(mean_ap, abs=1e-6)
    assert got["mINP"] == pytest.approx(minp, abs=1e-6)


def test_exclusion_changes_the_figures_and_groups_are_optional():
    q, qp, r, gp, qc, gc = _market(5, torch.float64)
    # the gallery holds each query itself (same identity, same camera): without exclusion it is
    # found first
    r2, gp2, gc2 = torch.cat([q, r]), torch.cat([qp, gp]), torch.cat([qc, gc])
    plain = reid_metrics(q, qp, r2, gp2)
    excluded = reid_metrics(q, qp, r2, gp2, qc, gc2)
    assert plain["cmc_at_1"] == 1.0 and excluded["cmc_at_1"] < 1.0
    distmat = (torch.cdist(q, r2) ** 2).numpy()
    none = np.full(len(q), -1), np.arange(len(r2))  # distinct cameras: nothing removed
    cmc, mean_ap, _, _ = eval_market1501(distmat, qp.numpy(), gp2.numpy(), *none, 50)
    assert plain["mAP"] == pytest.approx(mean_ap, abs=1e-9) and plain["cmc_at_5"] == pytest.approx(cmc[4])


def test_per_category_breakdown_is_the_protocol_over_each_category():
    q, qp, r, gp, qc, gc = _market(6, torch.float32)
    categories = torch.arange(len(q)) % 3
    got = reid_metrics(q, qp, r, gp, qc, gc, query_categories=categories, distance=CosineSimilarity())
    assert sorted(got["per_category"]) == [0, 1, 2]
    for c in range(3):
        mask = categories == c
        alone = reid_metrics(q[mask], qp[mask], r, gp, qc[mask], gc, distance=CosineSimilarity())
        assert got["per_category"][c] == alone
    assert sum(v["valid_queries"] for v in got["per_category"].values()) == got["valid_queries"]


def test_similarity_ranks_most_similar_first():
    q, qp, r, gp, qc, gc = _market(7, torch.float64)
    got = reid_metrics(q, qp, r, gp, qc, gc, distance=CosineSimilarity())
    sim = CosineSimilarity()(q, r).numpy()
    cmc, mean_ap, minp, _ = eval_market1501(-sim, qp.numpy(), gp.numpy(), qc.numpy(), gc.numpy(), 50)
    assert got["mAP"] == pytest.approx(mean_ap, abs=1e-9) and got["mINP"] == pytest.approx(minp, abs=1e-9)


def test_bad_inputs_are_named():
    q, qp, r, gp, qc, gc = _market(8, torch.float32)
    with pytest.raises(ValueError, match="reference_groups must have one entry per embedding: expected 120"):
        reid_metrics(q, qp, r, gp, qc, gc[:-1])
    with pytest.raises(ValueError, match="query_groups and reference_groups must be given together"):
        reid_metrics(q, qp, r, gp, qc)
    with pytest.raises(ValueError, match="query_categories must have one entry"):
        reid_metrics(q, qp, r, gp, query_categories=torch.zeros(3))
    with pytest.raises(ValueError, match="cmc_ranks must be a tuple or list of positive ints"):
        reid_metrics(q, qp, r, gp, cmc_ranks=(0,))
    with pytest.raises(ValueError, match="query_labels must have one label per embedding"):
        reid_metrics(q, qp[:-1], r, gp)
