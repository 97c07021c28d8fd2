import pytest
import torch
from _miner_helpers import line, ours, pairs_as_sets, random_batch, raw_l2, reference_miner

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, DotProductSimilarity
from deepmetric.miners import MultiSimilarityMiner


def test_default_distance_is_cosine():
    assert isinstance(MultiSimilarityMiner().distance, CosineSimilarity)


def test_hand_checked_similarity(dtype):
    # Dot products, anchor 0 at 1: positives 1 (s 2), 2 (s 0.5); negatives 3 (s 1), 4 (s -3).
    # Positives kept if s - 0.1 < max neg s = 1: only 2 (0.4 < 1).
    # Negatives kept if s + 0.1 > min pos s = 0.5: only 3 (1.1 > 0.5).
    miner = MultiSimilarityMiner(epsilon=0.1, distance=DotProductSimilarity(normalize_embeddings=False))
    a1, p, a2, n = miner(line(1, 2, 0.5, 1, -3, dtype=dtype), torch.tensor([0, 0, 0, 1, 1]))
    assert p[a1 == 0].tolist() == [2]
    assert n[a2 == 0].tolist() == [3]


def test_hand_checked_distance():
    # anchor 0 at 0: positives 1 (d 1), 2 (d 3); negatives 3 (d 2.5), 4 (d 0.5).
    # Positives kept if d + 0.1 > min neg d = 0.5: both. Negatives kept if d - 0.1 < 3: both.
    miner = MultiSimilarityMiner(epsilon=0.1, distance=raw_l2())
    a1, p, a2, n = miner(line(0, 1, 3, 2.5, 0.5), torch.tensor([0, 0, 0, 1, 1]))
    # Within an anchor, ascending by value: positives 1 (1), 2 (3); negatives 4 (0.5), 3 (2.5).
    assert p[a1 == 0].tolist() == [1, 2]
    assert n[a2 == 0].tolist() == [4, 3]


def test_output_is_grouped_by_anchor():
    emb, labels = random_batch(30, 4, 3, torch.float32)
    a1, _p, a2, _n = MultiSimilarityMiner(epsilon=0.5)(emb, labels)
    assert torch.equal(a1, a1.sort().values) and torch.equal(a2, a2.sort().values)


def test_one_class_gives_empty_tuples():
    out = MultiSimilarityMiner()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    assert all(len(x) == 0 and x.dtype == torch.long for x in out)


def test_anchor_without_positive_gets_no_negatives():
    _a1, _p, a2, _n = MultiSimilarityMiner(epsilon=10)(torch.randn(4, 3), torch.tensor([0, 0, 1, 2]))
    assert set(a2.tolist()) == {0, 1}


@requires_reference
@pytest.mark.parametrize("distance", ["CosineSimilarity", "LpDistance"])
@pytest.mark.parametrize("epsilon", [0.05, 0.3])
def test_matches_reference_in_order(dtype, distance, epsilon):
    emb, labels = random_batch(40, 8, 4, dtype)
    out = ours("MultiSimilarityMiner", distance, epsilon=epsilon)(emb, labels)
    ref = reference_miner("MultiSimilarityMiner", distance, epsilon=epsilon)(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


@requires_reference
def test_matches_reference_with_ref_emb(dtype):
    emb, labels = random_batch(20, 8, 4, dtype)
    ref_emb, ref_labels = random_batch(25, 8, 4, dtype, seed=1)
    out = ours("MultiSimilarityMiner")(emb, labels, ref_emb, ref_labels)
    ref = reference_miner("MultiSimilarityMiner")(emb, labels, ref_emb, ref_labels)
    assert pairs_as_sets(out) == pairs_as_sets(ref)


@requires_reference
def test_self_pairs_excluded_when_ref_emb_is_the_batch_as_in_reference():
    emb, labels = random_batch(20, 8, 4, torch.float32)
    out = ours("MultiSimilarityMiner")(emb, labels, emb, labels.clone())
    ref = reference_miner("MultiSimilarityMiner")(emb, labels, emb, labels.clone())
    assert not bool((out[0] == out[1]).any())
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
