"""BatchEasyHardMiner and its special case BatchHardMiner."""

import pytest
import torch
from _miner_helpers import line, ours, pairs_as_sets, random_batch, raw_l2, reference_miner

from conftest import requires_reference
from deepmetric.distances import DotProductSimilarity
from deepmetric.miners import BatchEasyHardMiner, BatchHardMiner

# 1-D points; anchor 0 sits at 0.
#   class 0: 0, 1, 3      class 1: 2, 4, -5
POINTS = (0.0, 1.0, 3.0, 2.0, 4.0, -5.0)
LABELS = torch.tensor([0, 0, 0, 1, 1, 1])


def _first_anchor(out):
    a1, p, a2, n = out
    pos = [pi for ai, pi in zip(a1.tolist(), p.tolist()) if ai == 0]
    neg = [ni for ai, ni in zip(a2.tolist(), n.tolist()) if ai == 0]
    return pos, neg


@pytest.mark.parametrize(
    "pos_strategy, neg_strategy, expected",
    [
        # positives of 0: 1 (d 1), 2 (d 3); negatives: 3 (d 2), 4 (d 4), 5 (d 5)
        ("hard", "hard", ([2], [3])),
        ("easy", "easy", ([1], [5])),
        ("easy", "hard", ([1], [3])),
        # semihard negative: nearest negative farther than the selected positive.
        ("easy", "semihard", ([1], [3])),  # d > 1: 3 (2)
        ("hard", "semihard", ([2], [4])),  # d > 3: 4 (4)
        # semihard positive: farthest positive closer than the selected negative.
        ("semihard", "hard", ([1], [3])),  # d < 2: 1 (1)
        ("semihard", "easy", ([2], [5])),  # d < 5: 2 (3)
        ("all", "hard", ([1, 2], [3])),
        ("hard", "all", ([2], [3, 4, 5])),
        ("all", "all", ([1, 2], [3, 4, 5])),
    ],
)
def test_hand_checked_selection_for_one_anchor(dtype, pos_strategy, neg_strategy, expected):
    miner = BatchEasyHardMiner(pos_strategy, neg_strategy, distance=raw_l2())
    pos, neg = _first_anchor(miner(line(*POINTS, dtype=dtype), LABELS))
    assert (sorted(pos), sorted(neg)) == expected


def test_allowed_ranges_are_inclusive():
    # hardest positive within [0, 1] is 1 (d 1); hardest negative within [4, 10] is 4 (d 4).
    miner = BatchEasyHardMiner(
        "hard", "hard", allowed_pos_range=(0, 1), allowed_neg_range=(4, 10), distance=raw_l2()
    )
    assert _first_anchor(miner(line(*POINTS), LABELS)) == ([1], [4])


def test_anchor_without_eligible_negative_is_dropped():
    # Semihard negative for anchor 5 (at -5): its hardest positive is 2 (d 8), no negative beyond 8.
    miner = BatchEasyHardMiner("hard", "semihard", distance=raw_l2())
    a1, _p, a2, _n = miner(line(*POINTS), LABELS)
    assert torch.equal(a1, a2) and 5 not in a1.tolist()


def test_similarity_flips_hard_and_easy():
    # Dot products with anchor at 1: positives 2 (s 2), 3 (s 3); negatives -1 (s -1), 4 (s 4).
    miner = BatchEasyHardMiner("hard", "hard", distance=DotProductSimilarity(normalize_embeddings=False))
    out = miner(line(1, 2, 3, -1, 4), torch.tensor([0, 0, 0, 1, 1]))
    assert _first_anchor(out) == ([1], [4])


def test_stats(dtype):
    miner = BatchEasyHardMiner("hard", "hard", distance=raw_l2(), collect_stats=True)
    miner(line(0.0, 1.0, 3.0, 10.0, 11.0, 12.0, dtype=dtype), torch.tensor([0, 0, 0, 1, 1, 1]))
    # hardest pos per anchor: 0->2 (3), 1->2 (2), 2->0 (3), 3->5 (2), 4->3/5 (1), 5->3 (2)
    # hardest neg per anchor: 0->3 (10), 1->3 (9), 2->3 (7), 3->2 (7), 4->2 (8), 5->2 (9)
    assert miner.hardest_pos_pair == 3 and miner.easiest_pos_pair == 1
    assert miner.hardest_neg_pair == 7 and miner.easiest_neg_pair == 10
    # pos - neg: -7, -7, -4, -5, -7, -7
    assert miner.hardest_triplet == -4 and miner.easiest_triplet == -7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pos_strategy": "medium"}, "pos_strategy must be one of"),
        ({"neg_strategy": "x"}, "neg_strategy must be one of"),
        ({"pos_strategy": "semihard", "neg_strategy": "semihard"}, "both"),
        ({"pos_strategy": "semihard", "neg_strategy": "all"}, "cannot be combined"),
        ({"pos_strategy": "all", "neg_strategy": "semihard"}, "cannot be combined"),
    ],
)
def test_bad_strategies_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchEasyHardMiner(**kwargs)


def test_batch_hard_returns_triplets(dtype):
    a, p, n = BatchHardMiner(distance=raw_l2())(line(*POINTS, dtype=dtype), LABELS)
    assert (a.tolist()[0], p.tolist()[0], n.tolist()[0]) == (0, 2, 3)
    assert len(a) == 6


def test_batch_hard_skips_elements_without_positive():
    a, _p, _n = BatchHardMiner()(torch.randn(4, 3), torch.tensor([0, 0, 1, 2]))
    assert sorted(a.tolist()) == [0, 1]


STRATEGY_PAIRS = [
    ("easy", "semihard"),
    ("hard", "hard"),
    ("semihard", "hard"),
    ("hard", "semihard"),
    ("easy", "easy"),
    ("all", "hard"),
    ("easy", "all"),
    ("all", "all"),
]


@requires_reference
@pytest.mark.parametrize("pos_strategy, neg_strategy", STRATEGY_PAIRS)
@pytest.mark.parametrize("distance", [None, "CosineSimilarity"])
def test_matches_reference(dtype, pos_strategy, neg_strategy, distance):
    emb, labels = random_batch(40, 8, 4, dtype)
    kwargs = {"pos_strategy": pos_strategy, "neg_strategy": neg_strategy, "collect_stats": True}
    miner, oracle = ours("BatchEasyHardMiner", distance, **kwargs), reference_miner("BatchEasyHardMiner", distance, **kwargs)
    out, ref = miner(emb, labels), oracle(emb, labels)
    assert pairs_as_sets(out) == pairs_as_sets(ref)
    for name in ("easiest_triplet", "hardest_triplet", "easiest_pos_pair", "hardest_pos_pair", "easiest_neg_pair", "hardest_neg_pair"):
        assert getattr(miner, name) == pytest.approx(getattr(oracle, name))


@requires_reference
def test_matches_reference_with_ranges_and_ref_emb(dtype):
    emb, labels = random_batch(20, 8, 4, dtype)
    ref_emb, ref_labels = random_batch(25, 8, 4, dtype, seed=1)
    kwargs = {"pos_strategy": "hard", "neg_strategy": "easy", "allowed_pos_range": (0.5, 1.3), "allowed_neg_range": (0.8, 1.6)}
    out = ours("BatchEasyHardMiner", **kwargs)(emb, labels, ref_emb, ref_labels)
    ref = reference_miner("BatchEasyHardMiner", **kwargs)(emb, labels, ref_emb, ref_labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    out = ours("BatchHardMiner")(emb, labels, ref_emb, ref_labels)
    ref = reference_miner("BatchHardMiner")(emb, labels, ref_emb, ref_labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


def test_x_per_row_accepts_index_lists_or_a_mask():
    miner = BatchEasyHardMiner(distance=raw_l2())
    mat = torch.tensor([[0.0, 2.0, 5.0], [1.0, 0.0, 3.0]])
    (values, idx), rows = miner.get_x_per_row("max", mat, torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert values[0] == 2 and idx[0] == 1 and rows.tolist() == [True, False]
    mask = torch.tensor([[True, True, False], [False, False, False]])
    (values_m, idx_m), rows_m = miner.get_x_per_row("max", mat, mask, None)
    assert torch.equal(values, values_m) and torch.equal(rows, rows_m) and idx_m[0] == 1
    (values_r, _), rows_r = miner.get_x_per_row("min", mat, mask, None, val_range=(1, 3))
    assert values_r[0] == 2 and rows_r.tolist() == [True, False]
