"""PairCounts: verification figures from the interleaving of positive and negative scores,
checked by hand and against scikit-learn on explicit score lists (ties included)."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from deepmetric.evaluation.pair_counts import PairCounts


def _scores(seed, positives=40, negatives=300, ties=False):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(positives, generator=g, dtype=torch.float64) + 1.0
    neg = torch.randn(negatives, generator=g, dtype=torch.float64)
    if ties:  # few distinct values: many exact ties within and across the two kinds
        pos, neg = torch.round(pos * 2) / 2, torch.round(neg * 2) / 2
    return pos, neg


def _sklearn_inputs(pos, neg):
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return y, np.r_[pos.numpy(), neg.numpy()]


def corners(fpr, tpr):
    """The turning points of a ROC polyline (duplicates and collinear points removed)."""
    points = []
    for f, t in zip(np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)):
        if points and points[-1] == (f, t):
            continue
        while len(points) >= 2:
            (f0, t0), (f1, t1) = points[-2], points[-1]
            if abs((f1 - f0) * (t - t1) - (t1 - t0) * (f - f1)) < 1e-15:
                points.pop()
            else:
                break
        points.append((f, t))
    return np.array(points)


def dense_eer(fpr, tpr):
    """EER from a full ROC curve: where the polyline crosses fpr = 1 - tpr."""
    gap = fpr + tpr - 1
    k = int(np.nonzero(gap >= 0)[0][0])
    if gap[k] == 0 or k == 0:
        return fpr[k]
    share = -gap[k - 1] / (gap[k] - gap[k - 1])
    return fpr[k - 1] + share * (fpr[k] - fpr[k - 1])


def test_hand_computed_example():
    # positives 3, 2, 2; negatives 1, 2, 4: slots below 2 / at 2 / between / at 3 / above
    counts = PairCounts.from_scores(torch.tensor([3.0, 2.0, 2.0]), torch.tensor([1.0, 2.0, 4.0]))
    assert counts.values.tolist() == [2.0, 3.0]
    assert counts.positive_counts.tolist() == [2, 1]
    assert counts.negative_counts.tolist() == [1, 1, 0, 0, 1]
    # pairs won by positives: 3 beats {1, 2}: 2; each 2 beats {1} and ties {2}: 1.5 each
    assert counts.roc_auc() == pytest.approx(5 / 9)
    # thresholds 3 then 2: (TP, FP) = (1, 1) then (3, 2)
    assert counts.at_positive(1).true_positives == 1 and counts.at_positive(1).false_positives == 1
    assert counts.tar_at_far(0.34) == pytest.approx(1 / 3)
    assert counts.tar_at_far(0.3) == 0.0
    assert counts.fnmr_at_fmr(0.7) == pytest.approx(0.0)
    # F1 at 3: 2/(1+1+3) = 0.4; at 2: 6/(3+2+3) = 0.75
    assert counts.best_f1() == pytest.approx(0.75)


def test_distances_are_scored_by_their_negation():
    as_similarity = PairCounts.from_scores(torch.tensor([-0.5, -1.0]), torch.tensor([-2.0, -0.7]))
    as_distance = PairCounts.from_scores(torch.tensor([0.5, 1.0]), torch.tensor([2.0, 0.7]), is_distance=True)
    assert as_distance.roc_auc() == as_similarity.roc_auc() == pytest.approx(3 / 4)
    # thresholds come back as distances: the strictest corner accepts distances <= 0.5
    _, _, thresholds = as_distance.roc_curve()
    assert 0.5 in thresholds.tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_roc_equal_sklearn(seed, ties):
    pos, neg = _scores(seed, ties=ties)
    counts = PairCounts.from_scores(pos, neg)
    y, s = _sklearn_inputs(pos, neg)
    assert counts.roc_auc() == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thresholds = sk_roc_curve(y, s)
    ours_fpr, ours_tpr, ours_thresholds = counts.roc_curve()
    np.testing.assert_allclose(corners(ours_fpr, ours_tpr), corners(fpr, tpr), atol=1e-12)
    # every threshold gives its point: accept scores >= t
    for f, t, threshold in zip(ours_fpr.tolist(), ours_tpr.tolist(), ours_thresholds.tolist()):
        assert float((neg >= threshold).double().mean()) == pytest.approx(f, abs=1e-12)
        assert float((pos >= threshold).double().mean()) == pytest.approx(t, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_rates_eer_and_f1_equal_the_dense_curve(seed, ties):
    pos, neg = _scores(seed, ties=ties)
    counts = PairCounts.from_scores(pos, neg)
    y, s = _sklearn_inputs(pos, neg)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    for rate in (1e-3, 0.01, 0.05, 0.1, 0.5, 0.9):
        expected = float(tpr[fpr <= rate].max())
        assert counts.tar_at_far(rate) == pytest.approx(expected, abs=1e-12)
        assert counts.fnmr_at_fmr(rate) == pytest.approx(1 - expected, abs=1e-12)
    assert counts.eer() == pytest.approx(dense_eer(fpr, tpr), abs=1e-12)
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    assert counts.best_f1() == pytest.approx(f1.max(), abs=1e-12)


def test_eer_of_separated_and_of_identical_scores():
    separated = PairCounts.from_scores(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0]))
    assert separated.eer() == 0.0 and separated.roc_auc() == 1.0
    tied = PairCounts.from_scores(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert tied.eer() == pytest.approx(0.5) and tied.roc_auc() == pytest.approx(0.5)


def test_max_points_gives_points_of_the_exact_curve():
    pos, neg = _scores(3, positives=500, negatives=5000)
    counts = PairCounts.from_scores(pos, neg)
    full_fpr, full_tpr, _ = counts.roc_curve(drop_intermediate=False)
    fpr, tpr, thresholds = counts.roc_curve(max_points=20)
    assert 2 < len(fpr) <= 20
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    exact = set(zip(full_fpr.tolist(), full_tpr.tolist()))
    assert all(point in exact for point in zip(fpr.tolist(), tpr.tolist()))
    assert bool((fpr[1:] >= fpr[:-1]).all()) and bool((thresholds[1:] <= thresholds[:-1]).all())


def test_thresholds_just_above_a_score_are_the_next_number_of_its_dtype():
    counts = PairCounts.from_scores(torch.tensor([1.0], dtype=torch.float32), torch.tensor([1.0], dtype=torch.float32))
    above = counts.just_above(0)
    assert above > 1.0 and np.float32(above) == np.nextafter(np.float32(1.0), np.float32(2.0))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="strictly increasing"):
        PairCounts(torch.tensor([2.0, 1.0]), torch.tensor([1, 1]), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="2 \\* 2 \\+ 1"):
        PairCounts(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="negative_scores contains NaN"):
        PairCounts.from_scores(torch.tensor([1.0]), torch.tensor([math.nan]))
    counts = PairCounts.from_scores(torch.tensor([1.0]), torch.tensor([0.0]))
    for rate in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="rate must be in \\(0, 1\\)"):
            counts.tar_at_far(rate)
    with pytest.raises(ValueError, match="needs positive and negative pairs"):
        PairCounts.from_scores(torch.tensor([1.0]), torch.zeros(0)).roc_auc()
    with pytest.raises(ValueError, match="max_points"):
        counts.roc_curve(max_points=1)
