"""MultiSimilarityLoss: hand-computed values, distances, miner tuples, reference sets, dtypes,
edge cases and the reference library as an oracle."""

import math

import pytest
import torch
from _pair_loss_helpers import (
    assert_attached_zero,
    assert_matches_reference,
    assert_matches_reference_with_mined_pairs_and_no_labels,
    random_batch,
    random_pairs,
    random_triplets,
)

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import MultiSimilarityLoss
from deepmetric.reducers import DoNothingReducer

C = 1 / math.sqrt(2)


def three_points(dtype=torch.float64):
    # cos(e0, e1) = cos(e1, e2) = 1/sqrt2, cos(e0, e2) = 0; labels 0, 0, 1
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=dtype, requires_grad=True)
    return emb, torch.tensor([0, 0, 1])


def expected_per_anchor(alpha, beta, base):
    def pos(*s):
        return math.log1p(sum(math.exp(-alpha * (x - base)) for x in s)) / alpha

    def neg(*s):
        return math.log1p(sum(math.exp(beta * (x - base)) for x in s)) / beta

    return [pos(C) + neg(0.0), pos(C) + neg(C), neg(0.0, C)]


def test_hand_computed_per_anchor_losses(dtype):
    emb, labels = three_points(dtype)
    out = MultiSimilarityLoss(alpha=2, beta=10, base=0.5, reducer=DoNothingReducer())(emb, labels)
    entry = out["loss"]
    assert entry["reduction_type"] == "element"
    assert entry["indices"].tolist() == [0, 1, 2]
    expected = torch.tensor(expected_per_anchor(2, 10, 0.5), dtype=dtype)
    torch.testing.assert_close(entry["losses"], expected)


def test_default_reduction_is_the_mean_over_all_anchors(dtype):
    emb, labels = three_points(dtype)
    value = MultiSimilarityLoss()(emb, labels)
    assert value.item() == pytest.approx(sum(expected_per_anchor(2, 50, 0.5)) / 3, rel=1e-6)


def test_with_a_distance_the_margins_flip():
    emb = torch.tensor([[0.0], [0.3], [1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    loss = MultiSimilarityLoss(alpha=1, beta=1, base=0.5, distance=LpDistance(normalize_embeddings=False))
    out = loss(emb, labels)
    # positives: exp(alpha * (d - base)); negatives: exp(beta * (base - d))
    a0 = math.log1p(math.exp(0.3 - 0.5)) + math.log1p(math.exp(0.5 - 1.0))
    a1 = math.log1p(math.exp(0.3 - 0.5)) + math.log1p(math.exp(0.5 - 0.7))
    a2 = math.log1p(math.exp(0.5 - 1.0) + math.exp(0.5 - 0.7))
    assert out.item() == pytest.approx((a0 + a1 + a2) / 3, rel=1e-9)


def test_records_hyper_parameters():
    loss = MultiSimilarityLoss(alpha=3, beta=40, base=0.4)
    assert {"alpha", "beta", "base"} <= set(loss._record_these)
    assert isinstance(loss.distance, CosineSimilarity)


def test_float16_is_close_to_float64():
    emb, labels, _ = random_batch(16, 8, 3, torch.float64, seed=3)
    full = MultiSimilarityLoss()(emb, labels)
    half = MultiSimilarityLoss()(emb.detach().half().requires_grad_(True), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(full.item(), rel=1e-2, abs=1e-2)


def test_gradcheck():
    emb, labels, _ = random_batch(6, 3, 2, torch.float64, seed=1)
    loss = MultiSimilarityLoss(alpha=2, beta=5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


@pytest.mark.parametrize("labels", [[0], [0, 0, 0], [0, 1, 2]], ids=["one", "single-class", "distinct"])
def test_degenerate_batches_are_finite(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    value = MultiSimilarityLoss()(emb, torch.tensor(labels))
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(emb.grad).all()


def test_batch_of_one_is_an_attached_zero():
    emb = torch.randn(1, 4, requires_grad=True)
    assert_attached_zero(MultiSimilarityLoss()(emb, torch.tensor([0])), emb)


def test_rejects_missing_labels_and_tuple():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        MultiSimilarityLoss()(torch.randn(4, 3))


def test_rejects_mismatched_labels():
    with pytest.raises(ValueError):
        MultiSimilarityLoss()(torch.randn(4, 3), torch.tensor([0, 1]))


def test_rejects_pair_marked_positive_and_negative():
    pairs = (torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="either"):
        MultiSimilarityLoss()(torch.randn(4, 3), indices_tuple=pairs)


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {}, {"alpha": 1, "beta": 20, "base": 0.3},
    {"distance": ("LpDistance", {})}, {"distance": ("LpDistance", {"power": 2, "normalize_embeddings": False})},
    {"distance": ("DotProductSimilarity", {})}, {"distance": ("SNRDistance", {})},
])
@pytest.mark.parametrize("mode", ["labels", "pairs", "triplets", "ref"])
def test_matches_reference(kwargs, mode, dtype):
    emb, labels, call = random_batch(40, 8, 5, dtype, seed=11, ref_size=30 if mode == "ref" else None)
    tuples = None
    if mode == "pairs":
        tuples = random_pairs(labels, repeat=True)
    elif mode == "triplets":
        tuples = random_triplets(labels)
    assert_matches_reference("MultiSimilarityLoss", emb, labels, call, tuples, **kwargs)


@requires_reference
def test_matches_reference_with_a_miner_and_no_labels(dtype):
    assert_matches_reference_with_mined_pairs_and_no_labels("MultiSimilarityLoss", dtype)


@requires_reference
def test_matches_reference_in_float16():
    emb, labels, _ = random_batch(24, 8, 4, torch.float16, seed=2)
    assert_matches_reference("MultiSimilarityLoss", emb, labels, scale=1)
