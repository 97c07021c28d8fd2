"""NTXentLoss: hand-computed values, label masks vs pair lists, miner tuples, reference sets,
dtypes, edge cases and the reference library as an oracle."""

import math

import pytest
import torch
from _pair_loss_helpers import (
    assert_attached_zero,
    assert_matches_reference_in_mode,
    assert_matches_reference_with_mined_pairs_and_no_labels,
    random_batch,
)

from conftest import requires_reference, tolerance
from deepmetric.distances import LpDistance
from deepmetric.losses import NTXentLoss
from deepmetric.reducers import DoNothingReducer, SumReducer
from deepmetric.utils import loss_and_miner_utils as lmu

ANGLES = [0.0, 0.4, 1.5, 2.5]  # unit vectors; cosine similarity = cos(angle difference)


def circle_points(dtype=torch.float64):
    emb = torch.tensor([[math.cos(a), math.sin(a)] for a in ANGLES], dtype=dtype, requires_grad=True)
    return emb, torch.tensor([0, 0, 1, 2])


def pair_term(i, j, negatives, t):
    s = lambda a, b: math.cos(ANGLES[a] - ANGLES[b])  # noqa: E731
    num = math.exp(s(i, j) / t)
    return -math.log(num / (num + sum(math.exp(s(i, k) / t) for k in negatives)))


def test_hand_computed_terms_per_positive_pair(dtype):
    emb, labels = circle_points(dtype)
    out = NTXentLoss(temperature=0.5, reducer=DoNothingReducer())(emb, labels)
    entry = out["loss"]
    assert entry["reduction_type"] == "pos_pair"
    a1, p = entry["indices"]
    assert a1.tolist() == [0, 1] and p.tolist() == [1, 0]
    # elements 2 and 3 have no positives: only the pairs (0, 1) and (1, 0), each against {2, 3}
    expected = torch.tensor([pair_term(0, 1, [2, 3], 0.5), pair_term(1, 0, [2, 3], 0.5)], dtype=dtype)
    torch.testing.assert_close(entry["losses"], expected)


def test_default_mean_over_positive_pairs(dtype):
    emb, labels = circle_points(dtype)
    expected = (pair_term(0, 1, [2, 3], 0.07) + pair_term(1, 0, [2, 3], 0.07)) / 2
    assert NTXentLoss()(emb, labels).item() == pytest.approx(expected, rel=1e-5)


def test_a_distance_is_negated_into_logits():
    emb = torch.tensor([[0.0], [0.2], [1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    loss = NTXentLoss(temperature=1.0, distance=LpDistance(normalize_embeddings=False))
    # pair (0,1): -log(e^-.2 / (e^-.2 + e^-1)); pair (1,0): -log(e^-.2 / (e^-.2 + e^-.8))
    expected = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-0.6))) / 2
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-9)


def test_anchor_without_negatives_in_the_tuple_contributes_zero():
    emb, _ = circle_points()
    # positive (0,1) has negatives; positive (2,3)'s anchor 2 has none in the tuple
    pairs = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0, 0]), torch.tensor([2, 3]))
    out = NTXentLoss(temperature=0.5, reducer=DoNothingReducer())(emb, indices_tuple=pairs)
    losses = out["loss"]["losses"]
    assert losses[1].item() == pytest.approx(0.0, abs=1e-12)
    assert losses[0].item() == pytest.approx(pair_term(0, 1, [2, 3], 0.5), rel=1e-9)


def test_repeated_negative_pairs_count_each_time():
    emb, _ = circle_points()
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 0, 0]), torch.tensor([2, 2, 3]))
    out = NTXentLoss(temperature=0.5, reducer=DoNothingReducer())(emb, indices_tuple=pairs)
    assert out["loss"]["losses"].item() == pytest.approx(pair_term(0, 1, [2, 2, 3], 0.5), rel=1e-9)


@pytest.mark.parametrize("reducer", [None, SumReducer()], ids=["mean", "sum"])
def test_label_masks_equal_the_listed_pairs(reducer, dtype):
    emb, labels, _ = random_batch(30, 6, 4, dtype, seed=4)
    kwargs = {} if reducer is None else {"reducer": reducer}
    loss = NTXentLoss(temperature=0.2, **kwargs)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 10, atol=atol * 10)


def test_records_temperature():
    assert "temperature" in NTXentLoss(temperature=0.3)._record_these


def test_float16_returns_float16_close_to_float64():
    # a moderate temperature: at 0.07 float16 rounding of the cosines is amplified 14 times
    emb, labels, _ = random_batch(16, 8, 3, torch.float64, seed=3)
    full = NTXentLoss(temperature=0.5)(emb, labels)
    half = NTXentLoss(temperature=0.5)(emb.detach().half().requires_grad_(True), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(full.item(), rel=1e-2, abs=1e-2)


def test_gradcheck():
    emb, labels, _ = random_batch(6, 3, 2, torch.float64, seed=1)
    loss = NTXentLoss(temperature=0.5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


@pytest.mark.parametrize("labels", [[0], [0, 0, 0], [0, 1, 2], [0, 0, 1]],
                         ids=["one", "single-class", "distinct", "one-pos-one-neg-each"])
def test_degenerate_batches_are_attached_zeros(labels):
    # [0, 0, 1]: two positive pairs and four negative pairs, so that one is not degenerate
    emb = torch.randn(len(labels), 4, requires_grad=True)
    value = NTXentLoss()(emb, torch.tensor(labels))
    if labels == [0, 0, 1]:
        assert value.item() > 0
        return
    assert_attached_zero(value, emb)


def test_no_nan_with_extreme_temperature():
    emb, labels, _ = random_batch(12, 4, 3, torch.float32, seed=0)
    value = NTXentLoss(temperature=1e-4)(emb, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()


def test_rejects_missing_labels_and_tuple():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        NTXentLoss()(torch.randn(4, 3))


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {}, {"temperature": 0.5},
    {"distance": ("LpDistance", {})}, {"distance": ("DotProductSimilarity", {"normalize_embeddings": False})},
    {"distance": ("SNRDistance", {})},
])
@pytest.mark.parametrize("mode", ["labels", "pairs", "triplets", "ref", "ref+pairs"])
def test_matches_reference(kwargs, mode, dtype):
    assert_matches_reference_in_mode("NTXentLoss", mode, dtype, seed=12, **kwargs)


@requires_reference
def test_matches_reference_with_a_miner_and_no_labels(dtype):
    assert_matches_reference_with_mined_pairs_and_no_labels("NTXentLoss", dtype)


@requires_reference
def test_float16_is_accumulated_in_float32_and_matches_the_float32_loss():
    # The reference adds float16's tiny (6e-5) inside the log in float16, which caps every term
    # near -log(6e-5) = 9.7 and so differs from its own float32 result; ours does not.
    emb, labels, _ = random_batch(24, 8, 4, torch.float16, seed=2)
    value16 = NTXentLoss()(emb, labels)
    value32 = NTXentLoss()(emb.detach().float(), labels)
    assert value16.dtype == torch.float16
    torch.testing.assert_close(value16.float(), value32, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("listed", [False, True], ids=["labels", "pair-list"])
def test_large_batch_needs_no_pairs_by_pairs_matrix(listed):
    # 1024 samples, 4 per class: a (positive pairs x negative pairs) matrix would need ~12 GB.
    emb, labels, _ = random_batch(1024, 8, 256, torch.float32, seed=0)
    tuples = lmu.get_all_pairs_indices(labels) if listed else None
    value = NTXentLoss()(emb, labels, tuples)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()
