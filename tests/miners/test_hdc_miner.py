import math

import pytest
import torch
from _miner_helpers import line, ours, random_batch, raw_l2, reference_miner

from conftest import requires_reference
from deepmetric.distances import DotProductSimilarity
from deepmetric.miners import HDCMiner

# Class 0: 0, 1, 4 ; class 1: 10. Positive pair distances (both directions): 1, 4, 3.
# Negative distances: 10, 9, 6 (both directions).
POINTS = (0.0, 1.0, 4.0, 10.0)
LABELS = torch.tensor([0, 0, 0, 1])


def _pairs(a, b):
    return list(zip(a.tolist(), b.tolist()))


def test_keeps_the_hardest_fraction_hardest_first(dtype):
    a1, p, a2, n = HDCMiner(filter_percentage=0.5, distance=raw_l2())(line(*POINTS, dtype=dtype), LABELS)
    # 6 positive pairs -> ceil(3) = 3 kept, largest distances first: 4, 4, 3.
    assert sorted(_pairs(a1, p)[:2]) == [(0, 2), (2, 0)]
    assert sorted(_pairs(a1, p)[2:]) in ([(1, 2)], [(2, 1)])
    # 6 negative pairs -> 3 kept, smallest distances first: 6, 6, 9.
    assert sorted(_pairs(a2, n)[:2]) == [(2, 3), (3, 2)]
    assert len(a2) == 3


def test_count_rounds_up():
    a1, _p, _a2, _n = HDCMiner(filter_percentage=0.2, distance=raw_l2())(line(*POINTS), LABELS)
    assert len(a1) == math.ceil(0.2 * 6) == 2


def test_similarity_selects_smallest_positives():
    miner = HDCMiner(filter_percentage=0.2, distance=DotProductSimilarity(normalize_embeddings=False))
    # dot products of class 0 (1, 2, 3): 2, 3, 6 ; the least similar pair is (0, 1), s = 2.
    a1, p, _a2, _n = miner(line(1, 2, 3, -1), LABELS)
    assert sorted(_pairs(a1, p)) == [(0, 1), (1, 0)]
    assert miner.should_select_largest("neg") and not miner.should_select_largest("pos")


def test_external_pool_persists_until_reset():
    miner = HDCMiner(filter_percentage=1.0, distance=raw_l2())
    emb = line(*POINTS)
    external = (torch.tensor([0]), torch.tensor([1]), torch.tensor([3]))
    miner.set_idx_externally(external, LABELS)
    assert miner.was_set_externally
    for _ in range(2):
        a1, p, a2, n = miner(emb, LABELS)
        assert _pairs(a1, p) == [(0, 1)] and _pairs(a2, n) == [(0, 3)]
    miner.reset_idx()
    assert miner.a1 is None and not miner.was_set_externally
    assert len(miner(emb, LABELS)[0]) == 6


def test_filtered_pairs_are_stored_on_the_miner():
    miner = HDCMiner(distance=raw_l2())
    out = miner(line(*POINTS), LABELS)
    assert out[0] is miner.a1 and out[3] is miner.n


@requires_reference
@pytest.mark.parametrize("distance", [None, "CosineSimilarity"])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_matches_reference_in_order(dtype, distance, fraction):
    emb, labels = random_batch(40, 8, 4, dtype)
    out = ours("HDCMiner", distance, filter_percentage=fraction)(emb, labels)
    ref = reference_miner("HDCMiner", distance, filter_percentage=fraction)(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
