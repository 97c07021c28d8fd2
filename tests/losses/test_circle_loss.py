"""CircleLoss: hand-computed values, detached weights, miner tuples, reference sets, dtypes,
edge cases and the reference library as an oracle."""

import math

import pytest
import torch
from _pair_loss_helpers import (
    assert_attached_zero,
    assert_matches_reference,
    assert_matches_reference_in_mode,
    assert_matches_reference_with_mined_pairs_and_no_labels,
    random_batch,
)

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from deepmetric.losses import CircleLoss
from deepmetric.reducers import DoNothingReducer

ANGLES = [0.0, 0.4, 1.5, 2.5]


def circle_points(dtype=torch.float64):
    emb = torch.tensor([[math.cos(a), math.sin(a)] for a in ANGLES], dtype=dtype, requires_grad=True)
    return emb, torch.tensor([0, 0, 1, 2])


def anchor_loss(i, positives, negatives, m, gamma):
    s = lambda k: math.cos(ANGLES[i] - ANGLES[k])  # noqa: E731
    lp = math.log(sum(math.exp(-gamma * max(1 + m - s(j), 0) * (s(j) - (1 - m))) for j in positives))
    ln = math.log(sum(math.exp(gamma * max(s(k) + m, 0) * (s(k) - m)) for k in negatives))
    return math.log1p(math.exp(lp + ln))


def test_hand_computed_per_anchor(dtype):
    emb, labels = circle_points(dtype)
    out = CircleLoss(m=0.25, gamma=4, reducer=DoNothingReducer())(emb, labels)
    entry = out["loss"]
    assert entry["reduction_type"] == "element" and entry["indices"].tolist() == [0, 1, 2, 3]
    expected = [anchor_loss(0, [1], [2, 3], 0.25, 4), anchor_loss(1, [0], [2, 3], 0.25, 4), 0.0, 0.0]
    torch.testing.assert_close(entry["losses"], torch.tensor(expected, dtype=dtype))


def test_default_reducer_averages_anchors_with_both_sides(dtype):
    emb, labels = circle_points(dtype)
    expected = (anchor_loss(0, [1], [2, 3], 0.4, 80) + anchor_loss(1, [0], [2, 3], 0.4, 80)) / 2
    assert CircleLoss()(emb, labels).item() == pytest.approx(expected, rel=1e-5)


def test_weights_carry_no_gradient():
    # one positive and one negative per anchor: d/ds_p = -gamma * a_p * sigmoid(.) with a_p fixed
    emb = torch.tensor([[1.0, 0.0], [math.cos(0.5), math.sin(0.5)], [0.0, 1.0]], dtype=torch.float64)
    mat = CosineSimilarity()(emb).requires_grad_(True)
    loss = CircleLoss(m=0.25, gamma=2)
    pos_mask, neg_mask = torch.zeros_like(mat), torch.zeros_like(mat)
    pos_mask[0, 1], neg_mask[0, 2] = 1, 1
    value = loss._compute_loss(mat, pos_mask, neg_mask)["loss"]["losses"][0]
    (grad,) = torch.autograd.grad(value, mat)
    sp, sn = mat[0, 1].item(), mat[0, 2].item()
    ap, an = 1.25 - sp, sn + 0.25
    z = -2 * ap * (sp - 0.75) + 2 * an * (sn - 0.25)
    sig = 1 / (1 + math.exp(-z))
    assert grad[0, 1].item() == pytest.approx(-2 * ap * sig, rel=1e-9)
    assert grad[0, 2].item() == pytest.approx(2 * an * sig, rel=1e-9)


def test_requires_cosine_similarity():
    with pytest.raises(ValueError, match="CosineSimilarity"):
        CircleLoss(distance=LpDistance())
    with pytest.raises(AssertionError):
        CircleLoss(distance=DotProductSimilarity())


def test_records_derived_constants():
    loss = CircleLoss(m=0.25, gamma=128)
    assert {"m", "gamma", "op", "on", "delta_p", "delta_n"} <= set(loss._record_these)
    assert (loss.op, loss.on, loss.delta_p, loss.delta_n) == (1.25, -0.25, 0.75, 0.25)


def test_float16_returns_float16_close_to_float64():
    emb, labels, _ = random_batch(16, 8, 3, torch.float64, seed=3)
    full = CircleLoss(gamma=8)(emb, labels)
    half = CircleLoss(gamma=8)(emb.detach().half().requires_grad_(True), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(full.item(), rel=1e-2, abs=1e-2)


def test_gradient_is_not_the_full_derivative():
    # gradcheck cannot apply: the weights a_p, a_n are detached on purpose (as in the paper), so
    # the gradient differs from a finite difference of the loss.
    emb, labels, _ = random_batch(6, 3, 2, torch.float64, seed=1)
    loss = CircleLoss(gamma=4)
    assert not torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,), raise_exception=False)


@pytest.mark.parametrize("labels", [[0], [0, 0, 0], [0, 1, 2]], ids=["one", "single-class", "distinct"])
def test_degenerate_batches_are_attached_zeros(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    assert_attached_zero(CircleLoss()(emb, torch.tensor(labels)), emb)


def test_rejects_missing_labels_and_tuple():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        CircleLoss()(torch.randn(4, 3))


@requires_reference
@pytest.mark.parametrize("kwargs", [{}, {"m": 0.25, "gamma": 256}, {"m": 0.1, "gamma": 10}])
@pytest.mark.parametrize("mode", ["labels", "pairs", "triplets", "ref", "ref+pairs"])
def test_matches_reference(kwargs, mode, dtype):
    assert_matches_reference_in_mode("CircleLoss", mode, dtype, seed=14, **kwargs)


@requires_reference
def test_matches_reference_with_a_miner_and_no_labels(dtype):
    assert_matches_reference_with_mined_pairs_and_no_labels("CircleLoss", dtype)


@requires_reference
def test_matches_reference_in_float16():
    emb, labels, _ = random_batch(24, 8, 4, torch.float16, seed=2)
    assert_matches_reference("CircleLoss", emb, labels, scale=1, gamma=8)
