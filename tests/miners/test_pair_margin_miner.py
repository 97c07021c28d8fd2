import pytest
import torch
from _miner_helpers import line, ours, pairs_as_sets, random_batch, raw_l2, reference_miner

from conftest import requires_reference
from deepmetric.distances import DotProductSimilarity
from deepmetric.miners import PairMarginMiner


def test_hand_checked_pairs(dtype):
    # Points 0, 0.5, 3 (class 0) and 1 (class 1).
    # Positive distances: (0,1)=0.5, (0,2)=3, (1,2)=2.5 -> all > pos_margin 1 except 0.5.
    # Negative distances to point 3 (value 1): 1, 0.5, 2 -> < neg_margin 1.5: rows 0, 1.
    miner = PairMarginMiner(pos_margin=1.0, neg_margin=1.5, distance=raw_l2(), collect_stats=True)
    out = miner(line(0, 0.5, 3, 1, dtype=dtype), torch.tensor([0, 0, 0, 1]))
    pos, neg = pairs_as_sets(out)
    assert pos == [(0, 2), (1, 2), (2, 0), (2, 1)]
    assert neg == [(0, 3), (1, 3), (3, 0), (3, 1)]
    # Stats are over all pairs before filtering: positives (0.5+3+2.5)*2/6, negatives (1+.5+2)*2/6.
    assert miner.pos_pair_dist == pytest.approx(2.0)
    assert miner.neg_pair_dist == pytest.approx(3.5 / 3)


def test_similarity_reverses_the_comparisons():
    # Dot products: (0,1)=2*1=2 (pos), (0,2)=2*-1=-2 (neg), (1,2)=-1 (neg)
    miner = PairMarginMiner(pos_margin=3.0, neg_margin=-1.5, distance=DotProductSimilarity(normalize_embeddings=False))
    pos, neg = pairs_as_sets(miner(line(2, 1, -1), torch.tensor([0, 0, 1])))
    assert pos == [(0, 1), (1, 0)]  # s = 2 < 3
    assert neg == [(1, 2), (2, 1)]  # s = -1 > -1.5


def test_no_positive_pairs_gives_empty_positives():
    a1, p, a2, _n = PairMarginMiner(neg_margin=10)(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    assert len(a1) == len(p) == 0 and len(a2) == 6


@requires_reference
@pytest.mark.parametrize("distance", [None, "CosineSimilarity"])
def test_matches_reference(dtype, distance):
    emb, labels = random_batch(40, 8, 4, dtype)
    out = ours("PairMarginMiner", distance)(emb, labels)
    ref = reference_miner("PairMarginMiner", distance)(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
