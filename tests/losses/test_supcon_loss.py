"""SupConLoss: hand-computed values, miner tuples, reference sets, dtypes, edge cases and the
reference library as an oracle."""

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
from deepmetric.distances import LpDistance
from deepmetric.losses import SupConLoss
from deepmetric.reducers import AvgNonZeroReducer, DoNothingReducer

ANGLES = [0.0, 0.4, 1.5, 2.5]


def circle_points(dtype=torch.float64):
    emb = torch.tensor([[math.cos(a), math.sin(a)] for a in ANGLES], dtype=dtype, requires_grad=True)
    return emb, torch.tensor([0, 0, 1, 2])


def anchor_loss(i, positives, others, t):
    z = {k: math.cos(ANGLES[i] - ANGLES[k]) / t for k in positives + others}
    lse = math.log(sum(math.exp(v) for v in z.values()))
    return -sum(z[j] - lse for j in positives) / len(positives)


def test_hand_computed_per_anchor(dtype):
    emb, labels = circle_points(dtype)
    out = SupConLoss(temperature=0.5, reducer=DoNothingReducer())(emb, labels)
    entry = out["loss"]
    assert entry["reduction_type"] == "element" and entry["indices"].tolist() == [0, 1, 2, 3]
    expected = [anchor_loss(0, [1], [2, 3], 0.5), anchor_loss(1, [0], [2, 3], 0.5), 0.0, 0.0]
    torch.testing.assert_close(entry["losses"], torch.tensor(expected, dtype=dtype))


def test_default_reducer_ignores_anchors_without_positives(dtype):
    emb, labels = circle_points(dtype)
    loss = SupConLoss()
    assert isinstance(loss.reducer, AvgNonZeroReducer)
    expected = (anchor_loss(0, [1], [2, 3], 0.1) + anchor_loss(1, [0], [2, 3], 0.1)) / 2
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-5)


def test_several_positives_are_averaged():
    emb, _ = circle_points()
    labels = torch.tensor([0, 0, 0, 1])
    out = SupConLoss(temperature=1.0, reducer=DoNothingReducer())(emb, labels)
    assert out["loss"]["losses"][0].item() == pytest.approx(anchor_loss(0, [1, 2], [3], 1.0), rel=1e-9)


def test_a_distance_is_negated_into_logits():
    emb = torch.tensor([[0.0], [0.2], [1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    loss = SupConLoss(temperature=1.0, distance=LpDistance(normalize_embeddings=False))
    expected = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-0.6))) / 2
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-9)


def test_records_temperature():
    assert "temperature" in SupConLoss(temperature=0.3)._record_these


def test_float16_returns_float16_close_to_float64():
    emb, labels, _ = random_batch(16, 8, 3, torch.float64, seed=3)
    full = SupConLoss(temperature=0.5)(emb, labels)
    half = SupConLoss(temperature=0.5)(emb.detach().half().requires_grad_(True), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(full.item(), rel=1e-2, abs=1e-2)


def test_gradcheck():
    emb, labels, _ = random_batch(6, 3, 2, torch.float64, seed=1)
    loss = SupConLoss(temperature=0.5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


@pytest.mark.parametrize("labels", [[0], [0, 0, 0], [0, 1, 2]], ids=["one", "single-class", "distinct"])
def test_degenerate_batches_are_attached_zeros(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    assert_attached_zero(SupConLoss()(emb, torch.tensor(labels)), emb)


def test_no_nan_with_extreme_temperature():
    emb, labels, _ = random_batch(12, 4, 3, torch.float32, seed=0)
    value = SupConLoss(temperature=1e-4)(emb, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()


def test_rejects_missing_labels_and_tuple():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        SupConLoss()(torch.randn(4, 3))


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {}, {"temperature": 0.5},
    {"distance": ("LpDistance", {})}, {"distance": ("DotProductSimilarity", {"normalize_embeddings": False})},
])
@pytest.mark.parametrize("mode", ["labels", "pairs", "triplets", "ref", "ref+pairs"])
def test_matches_reference(kwargs, mode, dtype):
    assert_matches_reference_in_mode("SupConLoss", mode, dtype, seed=13, **kwargs)


@requires_reference
def test_matches_reference_with_a_miner_and_no_labels(dtype):
    assert_matches_reference_with_mined_pairs_and_no_labels("SupConLoss", dtype)


@requires_reference
def test_matches_reference_in_float16():
    emb, labels, _ = random_batch(24, 8, 4, torch.float16, seed=2)
    assert_matches_reference("SupConLoss", emb, labels, scale=1)
