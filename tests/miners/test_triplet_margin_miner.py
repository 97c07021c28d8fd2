import math

import pytest
import torch
from _miner_helpers import as_set, line, ours, random_batch, raw_l2, reference_miner

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, DotProductSimilarity
from deepmetric.miners import TripletMarginMiner
from deepmetric.ops import blocked_triplets as _blocked_triplets

# Points 0 and 1 are class 0, point 1.5 is class 1 (1-D, raw L2 distance).
# Triplets (a, p, n) and margin m = d_an - d_ap:
#   (0, 1, 2): d_an 1.5, d_ap 1 -> m = 0.5
#   (1, 0, 2): d_an 0.5, d_ap 1 -> m = -0.5
POINTS = (0.0, 1.0, 1.5)
LABELS = torch.tensor([0, 0, 1])


@pytest.mark.parametrize(
    "kind, margin, expected",
    [
        ("all", 0.2, [(1, 0, 2)]),  # only m = -0.5 <= 0.2
        ("all", 0.6, [(0, 1, 2), (1, 0, 2)]),  # both <= 0.6
        ("hard", 0.6, [(1, 0, 2)]),  # m <= 0
        ("semihard", 0.6, [(0, 1, 2)]),  # 0 < m <= 0.6
        ("easy", 0.2, [(0, 1, 2)]),  # m > 0.2
        ("something else", 0.2, [(1, 0, 2)]),  # behaves like "all"
    ],
)
def test_hand_checked_triplets(dtype, kind, margin, expected):
    miner = TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=raw_l2())
    assert as_set(miner(line(*POINTS, dtype=dtype), LABELS)) == expected


def test_boundary_is_inclusive_for_all_and_exclusive_for_easy():
    # m = 0.5 exactly at margin 0.5: kept by "all", not by "easy".
    miner = TripletMarginMiner(margin=0.5, distance=raw_l2())
    assert (0, 1, 2) in as_set(miner(line(*POINTS), LABELS))
    easy = TripletMarginMiner(margin=0.5, type_of_triplets="easy", distance=raw_l2())
    assert as_set(easy(line(*POINTS), LABELS)) == []


def test_similarity_margin_is_positive_minus_negative():
    # Dot products with 1-D points 2, 1 (class 0) and 1.5 (class 1):
    # (0, 1, 2): s_ap = 2, s_an = 3 -> m = -1 ; (1, 0, 2): s_ap = 2, s_an = 1.5 -> m = 0.5
    miner = TripletMarginMiner(margin=0.2, distance=DotProductSimilarity(normalize_embeddings=False))
    assert as_set(miner(line(2, 1, 1.5), LABELS)) == [(0, 1, 2)]


def test_stats_are_means_over_all_triplets():
    miner = TripletMarginMiner(margin=0.2, distance=raw_l2(), collect_stats=True)
    miner(line(*POINTS), LABELS)
    # d_ap: 1, 1 -> 1 ; d_an: 1.5, 0.5 -> 1 ; margins 0.5, -0.5 -> 0
    assert miner.pos_pair_dist == pytest.approx(1.0)
    assert miner.neg_pair_dist == pytest.approx(1.0)
    assert miner.avg_triplet_margin == pytest.approx(0.0)


def test_stats_are_nan_without_triplets():
    miner = TripletMarginMiner(collect_stats=True)
    a, _p, _n = miner(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    assert len(a) == 0 and math.isnan(miner.avg_triplet_margin)


def test_no_negatives_gives_empty_triplets():
    a, p, n = TripletMarginMiner()(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    assert len(a) == len(p) == len(n) == 0 and a.dtype == torch.long


def test_blocks_give_the_same_triplets_in_the_same_order(monkeypatch, dtype):
    emb, labels = random_batch(30, 4, 3, dtype)
    whole = TripletMarginMiner(margin=0.3)(emb, labels)
    monkeypatch.setattr(_blocked_triplets, "CELLS_PER_BLOCK", 7)  # one positive pair per block
    blocked = TripletMarginMiner(margin=0.3)(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(whole, blocked))


def test_margin_is_recorded():
    assert "margin" in TripletMarginMiner(margin=0.3)._record_these


@requires_reference
@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
@pytest.mark.parametrize("distance", [None, "CosineSimilarity"])
def test_matches_reference_in_order(dtype, kind, distance):
    emb, labels = random_batch(40, 8, 4, dtype)
    out = ours("TripletMarginMiner", distance, margin=0.3, type_of_triplets=kind)(emb, labels)
    ref = reference_miner("TripletMarginMiner", distance, margin=0.3, type_of_triplets=kind)(emb, labels)
    assert len(out[0]) > 0
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


@requires_reference
def test_matches_reference_with_ref_emb_and_stats(dtype):
    emb, labels = random_batch(20, 8, 4, dtype)
    ref_emb, ref_labels = random_batch(25, 8, 4, dtype, seed=1)
    miner = ours("TripletMarginMiner", collect_stats=True)
    oracle = reference_miner("TripletMarginMiner", collect_stats=True)
    out = miner(emb, labels, ref_emb, ref_labels)
    ref = oracle(emb, labels, ref_emb, ref_labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    for name in ("pos_pair_dist", "neg_pair_dist", "avg_triplet_margin"):
        assert getattr(miner, name) == pytest.approx(getattr(oracle, name), rel=1e-5)


def test_works_with_cosine_on_half_precision():
    emb, labels = random_batch(20, 8, 4, torch.float32)
    full = TripletMarginMiner(distance=CosineSimilarity())(emb, labels)
    half = TripletMarginMiner(distance=CosineSimilarity())(emb.half(), labels)
    # Rounding may move triplets that sit at the margin; most agree.
    common = set(as_set(full)) & set(as_set(half))
    assert len(common) >= 0.9 * len(full[0])


@requires_reference
def test_self_pairs_follow_label_identity_as_in_reference():
    # ref_emb is the batch but ref_labels a copy: the reference then keeps (i, i) as a positive.
    emb, labels = random_batch(20, 8, 4, torch.float32)
    # (i, i, n) has d_ap = 0, so it is an "easy" triplet.
    out = ours("TripletMarginMiner", type_of_triplets="easy")(emb, labels, emb, labels.clone())
    ref = reference_miner("TripletMarginMiner", type_of_triplets="easy")(emb, labels, emb, labels.clone())
    assert bool((out[0] == out[1]).any())
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
