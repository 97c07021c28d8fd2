"""Tests of deepmetric.utils.loss_and_miner_utils (lmu): index tuples, masks, weights, sampling."""

import math

import pytest
import torch

from conftest import requires_reference
from deepmetric.utils import loss_and_miner_utils as lmu

SPEC_NAMES = [
    "logsumexp", "meshgrid_from_sizes", "get_matches_and_diffs", "get_all_pairs_indices",
    "convert_to_pairs", "convert_to_pos_pairs_with_unique_labels", "pos_pairs_from_tuple",
    "neg_pairs_from_tuple", "get_all_triplets_indices", "get_all_triplets_indices_vectorized_method",
    "get_all_triplets_indices_loop_method", "get_random_triplet_indices", "repeat_to_match_size",
    "matched_size_indices", "convert_to_triplets", "convert_to_weights", "remove_self_comparisons",
    "not_self_comparisons", "get_anchors",
]


def lists(t):
    return [x.tolist() for x in t]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_spec_name_exists(name):
    assert hasattr(lmu, name)


# ---------------------------------------------------------------------------------------------
# logsumexp


def test_logsumexp_hand_computed(dtype):
    x = torch.tensor([[0.0, math.log(2.0)], [1.0, 2.0], [3.0, 5.0]], dtype=dtype)
    keep = torch.tensor([[True, True], [False, False], [True, False]])
    out = lmu.logsumexp(x, keep_mask=keep, add_one=True)
    # row 0: log(1 + e^0 + 2) = log 4; row 1: nothing kept -> exactly 0; row 2: log(1 + e^3)
    expected = torch.tensor([[math.log(4.0)], [0.0], [math.log(1 + math.exp(3.0))]], dtype=dtype)
    torch.testing.assert_close(out, expected)
    assert out[1, 0].item() == 0.0
    out = lmu.logsumexp(x, keep_mask=keep, add_one=False)
    expected = torch.tensor([[math.log(3.0)], [0.0], [3.0]], dtype=dtype)
    torch.testing.assert_close(out, expected)
    # no mask: log(e^1 + e^2) for row 1
    plain = lmu.logsumexp(x, add_one=False)
    torch.testing.assert_close(plain[1, 0], torch.logsumexp(x[1], 0))


def test_logsumexp_along_dim0():
    x = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    out = lmu.logsumexp(x, add_one=True, dim=0)
    # column 0: log(1 + 1 + 1) = log 3; column 1: log(1 + e + e^2)
    expected = torch.tensor([[math.log(3.0), math.log(1 + math.e + math.e**2)]])
    torch.testing.assert_close(out, expected)


def test_logsumexp_float16_masked_rows_stay_finite():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float16)
    keep = torch.tensor([[True, False], [False, False]])
    out = lmu.logsumexp(x, keep_mask=keep)
    assert torch.isfinite(out).all() and out[1, 0].item() == 0.0


def test_logsumexp_gradient():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([[True, False, True, True], [False] * 4, [True, True, False, False]])
    assert torch.autograd.gradcheck(lambda t: lmu.logsumexp(t, keep_mask=keep), (x,))
    out = lmu.logsumexp(x, keep_mask=keep)
    out.sum().backward()
    assert torch.all(x.grad[~keep] == 0)  # masked entries get no gradient


# ---------------------------------------------------------------------------------------------
# pairs and triplets on hand-made labels

LABELS = torch.tensor([0, 0, 1, 0])
# positives (self-pairs excluded): (0,1) (0,3) (1,0) (1,3) (3,0) (3,1)
# negatives: (0,2) (1,2) (2,0) (2,1) (2,3) (3,2)
ALL_PAIRS = [[0, 0, 1, 1, 3, 3], [1, 3, 0, 3, 0, 1], [0, 1, 2, 2, 2, 3], [2, 2, 0, 1, 3, 2]]
# anchor 2 has no positive; anchors 0, 1, 3 have the single negative 2
ALL_TRIPLETS = [[0, 0, 1, 1, 3, 3], [1, 3, 0, 3, 0, 1], [2, 2, 2, 2, 2, 2]]

Q_LABELS = torch.tensor([0, 1])
R_LABELS = torch.tensor([1, 0, 0])
# matches: (0,1) (0,2) (1,0); diffs: (0,0) (1,1) (1,2)
REF_PAIRS = [[0, 0, 1], [1, 2, 0], [0, 1, 1], [0, 1, 2]]
REF_TRIPLETS = [[0, 0, 1, 1], [1, 2, 0, 0], [0, 0, 1, 2]]


def test_get_matches_and_diffs():
    matches, diffs = lmu.get_matches_and_diffs(LABELS)
    assert matches.dtype == torch.uint8 and diffs.dtype == torch.uint8
    assert torch.diagonal(matches).tolist() == [0, 0, 0, 0]
    assert torch.diagonal(diffs).tolist() == [0, 0, 0, 0]
    same_obj, _ = lmu.get_matches_and_diffs(LABELS, LABELS)
    assert torch.equal(same_obj, matches)
    # an equal copy is a different reference set: self-pairs are positives
    copy_matches, _ = lmu.get_matches_and_diffs(LABELS, LABELS.clone())
    assert torch.diagonal(copy_matches).tolist() == [1, 1, 1, 1]
    m, d = lmu.get_matches_and_diffs(Q_LABELS, R_LABELS)
    assert m.tolist() == [[0, 1, 1], [1, 0, 0]] and d.tolist() == [[1, 0, 0], [0, 1, 1]]


def test_get_all_pairs_indices_same_set():
    assert lists(lmu.get_all_pairs_indices(LABELS)) == ALL_PAIRS
    assert lists(lmu.get_all_pairs_indices(LABELS, LABELS)) == ALL_PAIRS
    out = lmu.get_all_pairs_indices(LABELS)
    assert all(x.dtype == torch.long for x in out)


def test_get_all_pairs_indices_with_ref_labels():
    assert lists(lmu.get_all_pairs_indices(Q_LABELS, R_LABELS)) == REF_PAIRS


def test_get_all_triplets_indices_hand_computed():
    assert lists(lmu.get_all_triplets_indices(LABELS)) == ALL_TRIPLETS
    assert lists(lmu.get_all_triplets_indices(Q_LABELS, R_LABELS)) == REF_TRIPLETS


@pytest.mark.parametrize("seed", range(4))
def test_triplet_methods_agree(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (12,), generator=g)
    ref_labels = torch.randint(0, 4, (9,), generator=g)
    for lab, ref in ((labels, None), (labels, ref_labels)):
        matches, diffs = lmu.get_matches_and_diffs(lab, ref)
        vec = lmu.get_all_triplets_indices_vectorized_method(matches, diffs)
        loop = lmu.get_all_triplets_indices_loop_method(lab, matches, diffs)
        assert lists(vec) == lists(loop)
        assert len(vec[0]) > 0


def test_loop_method_empty_when_no_triplet():
    labels = torch.tensor([0, 1, 2])  # no positives
    matches, diffs = lmu.get_matches_and_diffs(labels)
    out = lmu.get_all_triplets_indices_loop_method(labels, matches, diffs)
    assert all(len(x) == 0 and x.dtype == torch.long for x in out)


def test_convert_to_pairs():
    assert lists(lmu.convert_to_pairs(None, LABELS)) == ALL_PAIRS
    assert lists(lmu.convert_to_pairs(None, Q_LABELS, R_LABELS)) == REF_PAIRS
    four = tuple(torch.tensor(x) for x in ALL_PAIRS)
    assert lmu.convert_to_pairs(four, LABELS) is four
    a, p, n = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 2])
    out = lmu.convert_to_pairs((a, p, n), LABELS)
    assert out[0] is a and out[1] is p and out[2] is a and out[3] is n


def test_pos_neg_pairs_from_tuple():
    t = (1, 2, 3, 4)
    assert tuple(lmu.pos_pairs_from_tuple(t)) == (1, 2)
    assert tuple(lmu.neg_pairs_from_tuple(t)) == (3, 4)


def test_convert_to_pos_pairs_with_unique_labels():
    labels = torch.tensor([0, 0, 1, 1, 0])
    # positive pairs in row-major order: (0,1) (0,4) (1,0) (1,4) (2,3) (3,2) (4,0) (4,1);
    # first pair with anchor label 0 is (0,1), with anchor label 1 is (2,3)
    a, p = lmu.convert_to_pos_pairs_with_unique_labels(None, labels)
    assert a.tolist() == [0, 2] and p.tolist() == [1, 3]


def test_convert_to_triplets_from_pairs():
    a1, p = torch.tensor([0, 1, 0]), torch.tensor([1, 0, 3])
    a2, n = torch.tensor([0, 2, 1]), torch.tensor([2, 0, 2])
    out = lmu.convert_to_triplets((a1, p, a2, n), LABELS)
    # i=0 (anchor 0) pairs with j=0; i=1 (anchor 1) with j=2; i=2 (anchor 0) with j=0
    assert lists(out) == [[0, 1, 0], [1, 0, 3], [2, 2, 2]]
    no_shared = (torch.tensor([0]), torch.tensor([1]), torch.tensor([3]), torch.tensor([2]))
    assert all(len(x) == 0 for x in lmu.convert_to_triplets(no_shared, LABELS))
    empty = torch.tensor([], dtype=torch.long)
    out = lmu.convert_to_triplets((empty, empty, a2, n), LABELS)
    assert len(out) == 3 and all(len(x) == 0 and x.dtype == torch.long for x in out)


def test_convert_to_triplets_none_and_three_tuple():
    assert lists(lmu.convert_to_triplets(None, LABELS, t_per_anchor="all")) == ALL_TRIPLETS
    t = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert lmu.convert_to_triplets(t, LABELS) is t
    a, p, n = lmu.convert_to_triplets(None, LABELS, t_per_anchor=5)
    assert len(a) == len(p) == len(n) == 3 * 5  # anchors 0, 1, 3


def test_get_anchors():
    t3 = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    assert lmu.get_anchors(t3).tolist() == [0, 1]
    t4 = (torch.tensor([0]), torch.tensor([2]), torch.tensor([7]), torch.tensor([4]))
    assert lmu.get_anchors(t4).tolist() == [0, 7]


def test_convert_to_weights_spec_example(dtype):
    labels = torch.zeros(7, dtype=torch.long)
    t = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4]), torch.tensor([5, 5, 6, 6]))
    w = lmu.convert_to_weights(t, labels, dtype=dtype)
    # counts: 0..3 once, 4 four times, 5 and 6 twice; divided by the max count 4
    expected = torch.tensor([0.25, 0.25, 0.25, 0.25, 1.0, 0.5, 0.5], dtype=dtype)
    torch.testing.assert_close(w, expected)
    w = lmu.convert_to_weights(t, labels, dtype=dtype, using_ref=True)
    torch.testing.assert_close(w, torch.tensor([1, 1, 1, 1, 0, 0, 0], dtype=dtype))


def test_convert_to_weights_defaults_to_ones():
    labels = torch.zeros(3, dtype=torch.long)
    assert lmu.convert_to_weights(None, labels, torch.float16).tolist() == [1, 1, 1]
    empty = torch.tensor([], dtype=torch.long)
    w = lmu.convert_to_weights((empty, empty, empty), labels, torch.float64)
    assert w.dtype == torch.float64 and w.tolist() == [1, 1, 1]
    # unreferenced elements get 0
    w = lmu.convert_to_weights((torch.tensor([0]), torch.tensor([1]), torch.tensor([1])), labels, torch.float32)
    assert w.tolist() == [0.5, 1.0, 0.0]


def test_repeat_and_matched_size_indices():
    assert lmu.repeat_to_match_size(torch.tensor([1, 2]), 5, 2).tolist() == [1, 2, 1, 2, 1]
    p, n = lmu.matched_size_indices(torch.tensor([1, 2, 3]), torch.tensor([7]))
    assert p.tolist() == [1, 2, 3] and n.tolist() == [7, 7, 7]
    p, n = lmu.matched_size_indices(torch.tensor([1, 2]), torch.tensor([7, 8, 9]))
    assert p.tolist() == [1, 2, 1] and n.tolist() == [7, 8, 9]


def test_meshgrid_from_sizes():
    a, b = lmu.meshgrid_from_sizes(torch.zeros(2, 5), torch.zeros(3, 5))
    assert a.tolist() == [[0, 0, 0], [1, 1, 1]] and b.tolist() == [[0, 1, 2], [0, 1, 2]]


# ---------------------------------------------------------------------------------------------
# random triplets


def _check_valid_triplets(a, p, n, labels, ref_labels, same):
    assert a.dtype == p.dtype == n.dtype == torch.long
    assert torch.all(labels[a] == ref_labels[p])
    assert torch.all(labels[a] != ref_labels[n])
    if same:
        assert torch.all(a != p)


def test_random_triplets_same_set_are_valid():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # 2 and 3 are singletons: no anchors there
    a, p, n = lmu.get_random_triplet_indices(labels)
    _check_valid_triplets(a, p, n, labels, labels, True)
    # k = |P| per anchor: label 0 -> 3 anchors * 3, label 1 -> 2 anchors * 2
    assert len(a) == 9 + 4
    assert torch.bincount(a, minlength=7).tolist() == [3, 3, 3, 2, 2, 0, 0]
    a, p, n = lmu.get_random_triplet_indices(labels, t_per_anchor=4)
    _check_valid_triplets(a, p, n, labels, labels, True)
    assert torch.bincount(a, minlength=7).tolist() == [4, 4, 4, 4, 4, 0, 0]


def test_random_triplets_with_ref_labels():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0])
    ref_labels = torch.tensor([0, 1, 1, 3])  # label 2 has no positive in the reference
    a, p, n = lmu.get_random_triplet_indices(labels, ref_labels, t_per_anchor=3)
    _check_valid_triplets(a, p, n, labels, ref_labels, False)
    assert torch.bincount(a, minlength=4).tolist() == [3, 3, 0, 3]


def test_random_triplets_nothing_qualifies():
    for labels in (torch.tensor([0, 1, 2]), torch.tensor([4, 4, 4])):
        out = lmu.get_random_triplet_indices(labels)
        assert all(len(x) == 0 and x.dtype == torch.long for x in out)


@pytest.mark.parametrize("wdtype", [torch.float16, torch.float32, torch.float64])
def test_random_triplets_weights_draw_only_nonzero_negatives(wdtype):
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    weights = torch.zeros(6, 6, dtype=wdtype)
    weights[0, 4] = 1.0  # anchor 0: only negative 4 has weight
    weights[1, 2], weights[1, 5] = 0.5, 2.0  # anchor 1: negatives 2 or 5
    weights[2, 0] = 3.0  # anchor 2: only negative 0
    weights[4, 3] = float("nan")  # NaN row: dropped
    # anchors 3 and 5 have zero weight over their negatives: dropped
    a, p, n = lmu.get_random_triplet_indices(labels, t_per_anchor=20, weights=weights)
    _check_valid_triplets(a, p, n, labels, labels, True)
    assert set(a.tolist()) == {0, 1, 2}
    assert set(n[a == 0].tolist()) == {4}
    assert set(n[a == 1].tolist()) <= {2, 5}
    assert set(n[a == 2].tolist()) == {0}
    assert len(a) == 60


# ---------------------------------------------------------------------------------------------
# cross-batch memory helpers


def test_remove_self_comparisons_wrap_around():
    # batch of 3 stored at positions 4, 5, 0 of a circular buffer of size 6
    curr_batch_idx = torch.tensor([4, 5, 0])
    a, p, n = torch.tensor([0, 1, 2, 2]), torch.tensor([4, 4, 0, 1]), torch.tensor([2, 2, 3, 3])
    # own copies: anchor 0 -> 4 (drop), anchor 1 -> 5 (keep p=4), anchor 2 -> 0 (drop), keep p=1
    out = lmu.remove_self_comparisons((a, p, n), curr_batch_idx, 6)
    assert lists(out) == [[1, 2], [4, 1], [2, 3]]
    a2, n2 = torch.tensor([0, 1]), torch.tensor([3, 3])
    out = lmu.remove_self_comparisons((a, p, a2, n2), curr_batch_idx, 6)
    assert lists(out) == [[1, 2], [4, 1], [0, 1], [3, 3]]  # negatives untouched


def test_remove_self_comparisons_ref_is_subset():
    # the reference is the batch (3 rows); anchors index a buffer where it sits at 4, 5, 0
    curr_batch_idx = torch.tensor([4, 5, 0])
    a, p, n = torch.tensor([4, 4, 0, 3]), torch.tensor([0, 1, 2, 2]), torch.tensor([1, 1, 1, 1])
    out = lmu.remove_self_comparisons((a, p, n), curr_batch_idx, 6, ref_is_subset=True)
    assert lists(out) == [[4, 3], [1, 2], [1, 1]]


def test_remove_self_comparisons_rejects_bad_tuple():
    t = (torch.tensor([0]), torch.tensor([0]))
    for exc in (AssertionError, ValueError):
        with pytest.raises(exc, match="3 or 4"):
            lmu.remove_self_comparisons(t, torch.tensor([0, 1]), 4)


# ---------------------------------------------------------------------------------------------
# oracle comparisons


def _random_labels(seed, n, m, classes):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (m,), generator=g)


@requires_reference
@pytest.mark.parametrize("seed", range(3))
def test_deterministic_helpers_match_reference(seed):
    from pytorch_metric_learning.utils import loss_and_miner_utils as ref

    labels, ref_labels = _random_labels(seed, 10, 8, 3)
    for r in (None, ref_labels):
        assert lists(lmu.get_all_pairs_indices(labels, r)) == lists(ref.get_all_pairs_indices(labels, r))
        assert lists(lmu.get_all_triplets_indices(labels, r)) == lists(ref.get_all_triplets_indices(labels, r))
        for ours, theirs in zip(lmu.get_matches_and_diffs(labels, r), ref.get_matches_and_diffs(labels, r)):
            assert torch.equal(ours, theirs)
    pairs = lmu.get_all_pairs_indices(labels)
    assert lists(lmu.convert_to_triplets(pairs, labels)) == lists(ref.convert_to_triplets(pairs, labels))
    assert lists(lmu.convert_to_pos_pairs_with_unique_labels(pairs, labels)) == lists(
        ref.convert_to_pos_pairs_with_unique_labels(pairs, labels)
    )
    trip = lmu.get_all_triplets_indices(labels)
    for using_ref in (False, True):
        for t in (pairs, trip):
            torch.testing.assert_close(
                lmu.convert_to_weights(t, labels, torch.float32, using_ref=using_ref),
                ref.convert_to_weights(t, labels, torch.float32, using_ref=using_ref),
            )
    x = torch.randn(10, 8, dtype=torch.float64)
    keep = torch.rand(10, 8) > 0.6
    keep[0] = False
    torch.testing.assert_close(lmu.logsumexp(x, keep, add_one=True), ref.logsumexp(x, keep, add_one=True))
    torch.testing.assert_close(lmu.logsumexp(x, keep, add_one=False), ref.logsumexp(x, keep, add_one=False))


@requires_reference
@pytest.mark.parametrize("ref_is_subset", [False, True])
def test_remove_self_comparisons_matches_reference(ref_is_subset):
    from pytorch_metric_learning.utils import loss_and_miner_utils as ref

    ref_size, batch = 10, 4
    for start in (0, 3, 8):  # 8: the batch wraps around the end of the buffer
        curr_batch_idx = torch.arange(start, start + batch) % ref_size
        g = torch.Generator().manual_seed(start)
        big = torch.randint(0, ref_size, (40,), generator=g)
        small = torch.randint(0, batch, (40,), generator=g)
        a, p = (big, small) if ref_is_subset else (small, big)
        n = torch.randint(0, 5, (40,), generator=g)
        for t in ((a, p, n), (a, p, a, n)):
            ours = lmu.remove_self_comparisons(t, curr_batch_idx, ref_size, ref_is_subset)
            theirs = ref.remove_self_comparisons(
                tuple(x.clone() for x in t), curr_batch_idx, ref_size, ref_is_subset
            )
            assert lists(ours) == lists(theirs)


@requires_reference
def test_random_triplets_match_reference_under_same_seed():
    from pytorch_metric_learning.utils import loss_and_miner_utils as ref

    labels, ref_labels = _random_labels(5, 16, 12, 4)
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(16, 16, generator=g) * (torch.rand(16, 16, generator=g) < 0.6)
    weights[3] = 0  # an anchor with nothing to draw
    for r, t, w in (
        (None, None, None),
        (None, 3, None),
        (ref_labels, 2, None),
        (None, None, weights),
        (None, 5, weights.half()),
        (ref_labels, None, weights[:, :12]),
    ):
        torch.manual_seed(0)
        ours = lmu.get_random_triplet_indices(labels, r, t_per_anchor=t, weights=w)
        after_ours = torch.rand(3)
        torch.manual_seed(0)
        theirs = ref.get_random_triplet_indices(labels, r, t_per_anchor=t, weights=w)
        assert lists(ours) == lists(theirs) and len(ours[0]) > 0
        assert torch.equal(torch.rand(3), after_ours)


def test_count_per_row_equals_a_row_sum_for_bool_float_and_strided_masks():
    torch.manual_seed(0)
    mask = torch.rand(7, 300) < 0.4
    expected = mask.sum(dim=1)
    for given in (mask, mask.float(), mask.T.contiguous().T):
        counted = lmu.count_per_row(given)
        assert counted.dtype == torch.long and torch.equal(counted, expected)
    assert lmu.count_per_row(torch.zeros(2, 0, dtype=torch.bool)).tolist() == [0, 0]
