"""Verification metrics through AccuracyCalculator: opt-in names, equal to scikit-learn on the
dense scores of every pair (ties included, own pairs left out), bad names rejected by name."""

import numpy as np
import pytest
import torch

from deepmetric.distances import CosineSimilarity
from deepmetric.evaluation.knn import ExactKNN
from deepmetric.utils.accuracy_calculator import AccuracyCalculator

sklearn_metrics = pytest.importorskip("sklearn.metrics")

NAMES = ("roc_auc", "eer", "best_f1", "tar_at_far_0.1", "fnmr_at_fmr_1e-2", "tar_at_far_0.5")


def _sets(seed, dtype, n=60, m=80, d=5, integer=False):
    g = torch.Generator().manual_seed(seed)
    ql, rl = torch.randint(0, 5, (n,), generator=g), torch.randint(0, 5, (m,), generator=g)
    centres = 2 * torch.randn(5, d, generator=g)
    q = centres[ql] + torch.randn(n, d, generator=g)
    r = centres[rl] + torch.randn(m, d, generator=g)
    if integer:
        q, r = torch.round(q), torch.round(r)
    return q.to(dtype), ql, r.to(dtype), rl


def _oracle(scores, positive):
    """The figures from scikit-learn's ROC and precision-recall curves of the dense scores."""
    y, s = positive.numpy().astype(int), scores.double().numpy()
    fpr, tpr, _ = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    gap = fpr + tpr - 1
    k = int(np.nonzero(gap >= 0)[0][0])
    eer = fpr[k] if gap[k] == 0 or k == 0 else fpr[k - 1] + (-gap[k - 1] / (gap[k] - gap[k - 1])) * (fpr[k] - fpr[k - 1])
    precision, recall, _ = sklearn_metrics.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    out = {"roc_auc": sklearn_metrics.roc_auc_score(y, s), "eer": eer, "best_f1": f1.max()}
    for name, rate in (("tar_at_far_0.1", 0.1), ("fnmr_at_fmr_1e-2", 1e-2), ("tar_at_far_0.5", 0.5)):
        tar = tpr[fpr <= rate].max()
        out[name] = 1 - tar if name.startswith("fnmr") else tar
    return out


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("same_set", [False, True])
def test_figures_equal_sklearn_on_the_dense_scores(dtype, same_set, integer):
    q, ql, r, rl = _sets(int(same_set) + 2 * int(integer), dtype, integer=integer)
    calculator = AccuracyCalculator(include=NAMES, device="cpu")
    if same_set:
        got = calculator.get_accuracy(q, ql)
        values = torch.cdist(q.double(), q.double()) ** 2  # exact for these small sets
        positive = ql[:, None] == ql[None, :]
        keep = ~torch.eye(len(q), dtype=torch.bool)
        scores, positive = -values[keep], positive[keep]
    else:
        got = calculator.get_accuracy(q, ql, r, rl)
        scores = -(torch.cdist(q.double(), r.double()) ** 2).reshape(-1)
        positive = (ql[:, None] == rl[None, :]).reshape(-1)
    if integer:
        assert len(torch.unique(scores)) < len(scores) / 10  # many exact ties
    expected = _oracle(scores, positive)
    assert list(got) == list(NAMES)
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name


def test_the_knn_backends_distance_scores_the_pairs(dtype):
    q, ql, r, rl = _sets(7, dtype)
    calculator = AccuracyCalculator(include=("roc_auc",), knn_func=ExactKNN(distance=CosineSimilarity()), device="cpu")
    got = calculator.get_accuracy(q, ql, r, rl)["roc_auc"]
    scores = CosineSimilarity()(q.double(), r.double()).reshape(-1)
    positive = (ql[:, None] == rl[None, :]).reshape(-1)
    assert got == pytest.approx(sklearn_metrics.roc_auc_score(positive.numpy(), scores.numpy()), abs=1e-6)


def test_mixed_with_retrieval_metrics_and_never_in_the_default_set():
    q, ql, r, rl = _sets(8, torch.float32)
    default = set(AccuracyCalculator().get_curr_metrics())
    assert default == {"AMI", "NMI", "mean_average_precision", "mean_average_precision_at_r",
                       "mean_reciprocal_rank", "precision_at_1", "r_precision"}
    both = AccuracyCalculator(include=("precision_at_1", "roc_auc"), device="cpu").get_accuracy(q, ql, r, rl)
    alone = AccuracyCalculator(include=("precision_at_1",), device="cpu").get_accuracy(q, ql, r, rl)
    assert list(both) == ["precision_at_1", "roc_auc"] and both["precision_at_1"] == alone["precision_at_1"]
    # excluding a verification metric by name is allowed and leaves the default set as it is
    assert AccuracyCalculator(exclude=("roc_auc",)).get_curr_metrics() == AccuracyCalculator().get_curr_metrics()


def test_bad_metric_names_are_one_clear_value_error():
    with pytest.raises(ValueError, match="'tar_at_far_2'.*must be in \\(0, 1\\)"):
        AccuracyCalculator(include=("tar_at_far_2",))
    with pytest.raises(ValueError, match="'fnmr_at_fmr_0'.*must be in \\(0, 1\\)"):
        AccuracyCalculator(include=("fnmr_at_fmr_0",))
    with pytest.raises(ValueError, match="'fnmr_at_fmr_often'.*not a number"):
        AccuracyCalculator(include=("fnmr_at_fmr_often",))
    with pytest.raises(ValueError, match="Unknown metric name.*roc_auc_score"):
        AccuracyCalculator(include=("roc_auc_score",))


def test_wrong_label_lengths_are_named():
    q, ql, r, rl = _sets(9, torch.float32)
    calculator = AccuracyCalculator(include=("eer",), device="cpu")
    with pytest.raises(ValueError, match="reference_labels"):
        calculator.get_accuracy(q, ql, r, rl[:-3])
