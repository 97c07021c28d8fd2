"""Verification metrics over every query-reference pair (two passes over blocks of scores, the
N x M matrix never stored): equal to scikit-learn on the dense score matrix of the same blocks,
ties included; quantiles of the negatives; bad inputs named."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from deepmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance, SNRDistance
from deepmetric.evaluation import verification
from deepmetric.evaluation.pair_counts import PairCounts
from deepmetric.evaluation.verification import (
    PairScores,
    pair_list_counts,
    parse_metric_name,
    verification_counts,
    verification_metrics,
)

DISTANCES = {
    "squared_l2_raw": lambda: None,
    "cosine": CosineSimilarity,
    "l2": LpDistance,
    "dot_raw": lambda: DotProductSimilarity(normalize_embeddings=False),
    "snr": SNRDistance,
}


def _sets(seed, dtype=torch.float32, n=70, m=90, d=6, classes=6, integer=False):
    g = torch.Generator().manual_seed(seed)
    ql = torch.randint(0, classes, (n,), generator=g)
    rl = torch.randint(0, classes, (m,), generator=g)
    centres = torch.randn(classes, d, generator=g)
    q = centres[ql] + torch.randn(n, d, generator=g)
    r = centres[rl] + torch.randn(m, d, generator=g)
    if integer:  # exact scores, many of them equal
        q, r = torch.round(q), torch.round(r)
    return q.to(dtype), ql, r.to(dtype), rl


def _dense(source):
    """The scores of every pair, from the source's own blocks, and which pairs count."""
    scores = torch.cat([values for _, values in source.blocks()]) * source.sign
    positive = source.query_labels[:, None] == source.reference_labels[None, :]
    counted = torch.ones_like(positive)
    if source.own:
        counted[:, : len(source.query)].fill_diagonal_(False)
    return scores, positive, counted


@pytest.mark.parametrize("name", list(DISTANCES))
@pytest.mark.parametrize("same_set", [False, True])
def test_counts_equal_those_of_the_dense_matrix_and_sklearn(name, same_set, dtype):
    q, ql, r, rl = _sets(1, dtype)
    distance = DISTANCES[name]()
    if same_set:
        source = PairScores(q, ql, distance=distance, memory_budget_bytes=24 * 70 * 9)
    else:
        source = PairScores(q, ql, r, rl, distance=distance, memory_budget_bytes=24 * 90 * 9)
    assert source.rows == 9  # several blocks
    counts = source.counts()
    scores, positive, counted = _dense(source)
    dense = PairCounts.from_scores(scores[positive & counted], scores[~positive & counted])
    assert torch.equal(counts.values.double(), dense.values.double())
    assert torch.equal(counts.positive_counts, dense.positive_counts)
    assert torch.equal(counts.negative_counts, dense.negative_counts)
    y = positive[counted].numpy()
    assert counts.roc_auc() == pytest.approx(roc_auc_score(y, scores[counted].numpy()), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_exact_ties_are_counted_as_sklearn_counts_them(seed):
    q, ql, r, rl = _sets(seed, integer=True)
    source = PairScores(q, ql, r, rl, distance=LpDistance(normalize_embeddings=False, power=2))
    counts = source.counts()
    scores, positive, _ = _dense(source)
    assert len(torch.unique(scores)) < scores.numel() / 20  # heavily tied
    assert counts.roc_auc() == pytest.approx(roc_auc_score(positive.reshape(-1).numpy(), scores.reshape(-1).numpy()), abs=1e-12)


def test_results_do_not_depend_on_the_block_size():
    # integer embeddings: every block computes exactly the same scores
    q, ql, r, rl = _sets(4, integer=True)
    distance = LpDistance(normalize_embeddings=False, power=2)
    reference = verification_counts(q, ql, r, rl, distance=distance)
    for budget in (24 * 90, 24 * 90 * 7, 24 * 90 * 64):
        counts = verification_counts(q, ql, r, rl, distance=distance, memory_budget_bytes=budget)
        assert torch.equal(counts.negative_counts, reference.negative_counts)


def test_many_distinct_positives_use_many_bins():
    # enough positives for a grid finer than the minimum, most bins holding no positive
    q, ql, r, rl = _sets(5, n=400, m=500, classes=3)
    source = PairScores(q, ql, r, rl)
    counts = source.counts()
    assert source.bins.count > 2**10 and bool((~source.bins.mixed).any())
    scores, positive, _ = _dense(source)
    dense = PairCounts.from_scores(scores[positive], scores[~positive])
    assert torch.equal(counts.negative_counts, dense.negative_counts)


def test_custom_label_comparison_and_multi_column_labels():
    q, ql, r, rl = _sets(6)
    by_equality = verification_counts(q, ql, r, rl)
    by_function = verification_counts(q, ql, r, rl, label_comparison_fn=lambda x, y: x == y)
    assert torch.equal(by_function.negative_counts, by_equality.negative_counts)
    # two label columns that must both agree: (label, label % 2) behaves as label
    two_columns = verification_counts(q, torch.stack([ql, ql % 2], 1), r, torch.stack([rl, rl % 2], 1))
    assert torch.equal(two_columns.negative_counts, by_equality.negative_counts)
    # "same parity" makes more positives
    parity = verification_counts(q, ql, r, rl, label_comparison_fn=lambda x, y: (x % 2) == (y % 2))
    assert parity.num_positives > by_equality.num_positives
    assert parity.num_positives == int(((ql[:, None] % 2) == (rl[None, :] % 2)).sum())


def test_no_positive_pairs():
    q, _, r, _ = _sets(7)
    counts = verification_counts(q, torch.zeros(len(q)), r, torch.ones(len(r)))
    assert counts.num_positives == 0 and counts.num_negatives == len(q) * len(r)
    result = verification_metrics(q, torch.zeros(len(q)), r, torch.ones(len(r)), metrics=["roc_auc"])
    assert np.isnan(result["roc_auc"])


@pytest.mark.parametrize("same_set", [False, True])
def test_negative_at_rank_is_the_sorted_negative(same_set, monkeypatch):
    q, ql, r, rl = _sets(8, integer=True)
    args = (q, ql) if same_set else (q, ql, r, rl)
    source = PairScores(*args, distance=LpDistance(normalize_embeddings=False, power=2))
    source.counts()
    scores, positive, counted = _dense(source)
    negatives = torch.sort(scores[~positive & counted], descending=True).values
    ranks = [1, 2, 17, len(negatives) // 3, len(negatives)]
    expected = [(float(negatives[k - 1]), int((negatives > negatives[k - 1]).sum())) for k in ranks]
    assert [source.negative_at_rank(k) for k in ranks] == expected
    # the same through bins split into finer bins (a bin too large to collect)
    monkeypatch.setattr(verification, "_COLLECT_LIMIT", 5)
    monkeypatch.setattr(verification, "_SPLIT_BINS", 4)
    assert [source.negative_at_rank(k) for k in ranks] == expected


def test_negative_at_rank_without_ties_in_float32():
    q, ql, r, rl = _sets(9, n=200, m=300)
    source = PairScores(q, ql, r, rl, distance=CosineSimilarity())
    source.counts()
    scores, positive, _ = _dense(source)
    negatives = torch.sort(scores[~positive], descending=True).values
    for k in (1, 100, 5000, len(negatives)):
        value, above = source.negative_at_rank(k)
        assert value == float(negatives[k - 1]) and above == k - 1


def test_operating_points_count_the_accepted_pairs():
    q, ql, r, rl = _sets(10)
    for distance in (LpDistance(), CosineSimilarity()):
        source = PairScores(q, ql, r, rl, distance=distance)
        values = torch.cat([v for _, v in source.blocks()])
        positive = ql[:, None] == rl[None, :]
        thresholds = [float(values.quantile(p)) for p in (0.1, 0.5, 0.9)]
        for point, t in zip(source.operating_points(thresholds), thresholds):
            accepted = values >= t if distance.is_inverted else values <= t
            assert point.true_positives == int((accepted & positive).sum())
            assert point.false_positives == int((accepted & ~positive).sum())
            assert point.positives == int(positive.sum()) and point.negatives == int((~positive).sum())


def test_a_changed_score_between_passes_is_an_error(monkeypatch):
    q, ql, r, rl = _sets(11)
    source = PairScores(q, ql, r, rl)
    calls = []
    original = source.blocks

    def drifting_blocks():
        calls.append(1)
        for start, values in original():
            yield start, values + (1e-3 if len(calls) > 1 else 0.0)

    monkeypatch.setattr(source, "blocks", drifting_blocks)
    with pytest.raises(RuntimeError, match="differ from those of the first"):
        source.counts()


def test_pair_lists_score_each_pair_as_the_match_finder_does():
    q, ql, r, rl = _sets(12)
    g = torch.Generator().manual_seed(0)
    qi, ri = torch.randint(0, len(q), (500,), generator=g), torch.randint(0, len(r), (500,), generator=g)
    positive = ql[qi] == rl[ri]
    for distance in (CosineSimilarity(), LpDistance(power=2)):
        counts = pair_list_counts(q, r, qi, ri, positive, distance=distance)
        values = distance(q, r)[qi, ri]
        score = values if distance.is_inverted else -values
        assert counts.roc_auc() == pytest.approx(roc_auc_score(positive.numpy(), score.numpy()), abs=1e-6)


def test_metric_names():
    assert parse_metric_name("roc_auc") == ("roc_auc", None)
    assert parse_metric_name("fnmr_at_fmr_1e-3") == ("fnmr_at_fmr", 1e-3)
    assert parse_metric_name("tar_at_far_0.01") == ("tar_at_far", 0.01)
    assert parse_metric_name("precision_at_1") is None
    with pytest.raises(ValueError, match="'fnmr_at_fmr_abc'.*not a number"):
        parse_metric_name("fnmr_at_fmr_abc")
    for bad in ("tar_at_far_1", "tar_at_far_0", "tar_at_far_2e0"):
        with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
            parse_metric_name(bad)


def test_verification_metrics_by_name():
    q, ql, r, rl = _sets(13)
    result = verification_metrics(q, ql, r, rl, metrics=("roc_auc", "eer", "best_f1", "tar_at_far_0.1", "fnmr_at_fmr_0.1"))
    counts = verification_counts(q, ql, r, rl)
    assert result["roc_auc"] == counts.roc_auc() and result["eer"] == counts.eer()
    assert result["tar_at_far_0.1"] + result["fnmr_at_fmr_0.1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown verification metric"):
        verification_metrics(q, ql, r, rl, metrics=("precision_at_1",))


def test_bad_inputs_are_named():
    q, ql, r, rl = _sets(14)
    with pytest.raises(ValueError, match="query_labels must have one label per embedding: expected 70"):
        verification_counts(q, ql[:-1], r, rl)
    with pytest.raises(ValueError, match="reference_labels must have one label per embedding"):
        verification_counts(q, ql, r, rl[:3])
    with pytest.raises(ValueError, match="query contains NaN"):
        verification_counts(torch.full((3, 2), float("nan")), torch.zeros(3))
    with pytest.raises(ValueError, match="same width"):
        verification_counts(q, ql, r[:, :3], rl)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        verification_counts(q, ql, r, rl, memory_budget_bytes=0)
    with pytest.raises(ValueError, match="query_indices, reference_indices and is_positive"):
        pair_list_counts(q, r, [0, 1], [0], [True, False])
    with pytest.raises(ValueError, match="reference_indices must be in \\[0, 90\\)"):
        pair_list_counts(q, r, [0], [90], [True])
