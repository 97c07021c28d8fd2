"""FastAPLoss: hand-computed histograms, miner weights, blocking, dtypes, gradients, edge cases
and the reference library as an oracle."""

import math

import pytest
import torch
from _ranking_helpers import assert_same_as_reference, grad_of

import deepmetric.ops.pulse_histograms as pulse_module
from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import FastAPLoss
from deepmetric.miners import MultiSimilarityMiner
from deepmetric.reducers import DoNothingReducer


def circle(degrees, dtype=torch.float64):
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).to(dtype).requires_grad_(True)


# Unit vectors at 0, 45, 90 and 180 degrees, labels [0, 0, 1, 1]; squared L2 distances are
# 2 - 2 cos(angle): a = 2 - sqrt2 (45 deg), 2 (90), 2 + sqrt2 (135), 4 (180). With num_bins=4
# the centres are 0..4 (delta 1). Per row (positives | negatives):
#   row 0: pos a | neg 2, 4       -> every positive ranked first: FastAP 1
#   row 1: pos a | neg a, 2+sqrt2 -> h+ = [1-a, a], h- adds the same: FastAP 1/2
#   row 2: pos 2 | neg 2, a       -> h+ = 1 at centre 2, H there = 3: FastAP 1/3
#   row 3: pos 2 | neg 4, 2+sqrt2 -> the positive is nearest: FastAP 1
EXPECTED_PER_ROW = [0.0, 0.5, 2 / 3, 0.0]


def test_hand_computed_value(dtype):
    emb, labels = circle([0, 45, 90, 180], dtype), torch.tensor([0, 0, 1, 1])
    out = FastAPLoss(num_bins=4)(emb, labels)
    assert out.item() == pytest.approx(sum(EXPECTED_PER_ROW) / 4, rel=1e-5)


def test_loss_dict_has_one_entry_per_element_with_a_positive():
    emb, labels = circle([0, 45, 90, 180, 270]), torch.tensor([0, 0, 1, 1, 2])
    out = FastAPLoss(num_bins=4, reducer=DoNothingReducer())(emb, labels)["loss"]
    assert out["reduction_type"] == "element"
    assert out["indices"].tolist() == [0, 1, 2, 3]


def test_hand_computed_per_row_losses():
    emb, labels = circle([0, 45, 90, 180]), torch.tensor([0, 0, 1, 1])
    out = FastAPLoss(num_bins=4, reducer=DoNothingReducer())(emb, labels)["loss"]["losses"]
    torch.testing.assert_close(out, torch.tensor(EXPECTED_PER_ROW, dtype=torch.float64))


def test_miner_weights_scale_each_row():
    emb, labels = circle([0, 45, 90, 180]), torch.tensor([0, 0, 1, 1])
    triplets = (torch.tensor([1, 2]), torch.tensor([1, 3]), torch.tensor([3, 1]))
    out = FastAPLoss(num_bins=4, reducer=DoNothingReducer())(emb, labels, triplets)["loss"]["losses"]
    # index counts: 1 -> 3, 2 -> 1, 3 -> 2, 0 -> 0
    weights = [0.0, 1.0, 1 / 3, 2 / 3]
    expected = [loss * w for loss, w in zip(EXPECTED_PER_ROW, weights)]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_single_class_ranks_every_positive_first():
    emb = torch.randn(5, 3, requires_grad=True)
    out = FastAPLoss(reducer=DoNothingReducer())(emb, torch.zeros(5, dtype=torch.long))["loss"]["losses"]
    torch.testing.assert_close(out, torch.zeros(5), atol=1e-6, rtol=0)


@pytest.mark.parametrize("labels", [[0], [0, 1, 2, 3]], ids=["batch_of_one", "all_distinct"])
def test_no_positive_gives_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = FastAPLoss()(emb, torch.tensor(labels))
    assert out.item() == 0 and out.requires_grad
    assert torch.all(grad_of(out, emb) == 0)


def test_blocked_rows_give_the_same_values_and_gradients(monkeypatch):
    torch.manual_seed(0)
    emb = torch.randn(37, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (37,))
    whole = FastAPLoss()(emb, labels)
    g_whole = grad_of(whole, emb)
    monkeypatch.setattr(pulse_module, "_BLOCK_ELEMENTS", 100)  # 2 rows per block
    blocked = FastAPLoss()(emb, labels)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(grad_of(blocked, emb), g_whole)


def test_gradcheck_of_the_loss():
    torch.manual_seed(3)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda x: FastAPLoss(num_bins=7)(x, labels), (emb,))


def test_float16_matches_float32():
    torch.manual_seed(4)
    emb = torch.randn(24, 8)
    labels = torch.randint(0, 3, (24,))
    full = FastAPLoss()(emb, labels)
    half = FastAPLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_records_num_bins():
    loss = FastAPLoss(num_bins=7.0)
    assert loss.num_bins == 7 and loss.num_edges == 8
    assert "num_bins" in loss._record_these


@pytest.mark.parametrize("num_bins", [0, -3])
def test_num_bins_must_be_positive(num_bins):
    with pytest.raises(ValueError, match="num_bins"):
        FastAPLoss(num_bins=num_bins)


@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance(p=1), LpDistance(normalize_embeddings=False)],
                         ids=["cosine", "p1", "unnormalized"])
def test_distance_must_be_normalized_l2(distance):
    with pytest.raises(AssertionError, match="FastAPLoss"):
        FastAPLoss(distance=distance)


def test_reference_set_is_rejected():
    emb, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="ref_emb"):
        FastAPLoss()(emb, labels, ref_emb=torch.randn(3, 3), ref_labels=torch.tensor([0, 1, 1]))


def test_labels_are_required():
    with pytest.raises(ValueError, match="labels"):
        FastAPLoss()(torch.randn(4, 3))


# ---------------------------------------------------------------- oracle


@requires_reference
@pytest.mark.parametrize("power,num_bins", [(2, 10), (1, 5), (3, 20)])
@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_reference(power, num_bins, with_miner, dtype):
    import pytorch_metric_learning.distances as ref_distances
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(5)
    emb = torch.randn(48, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 6, (48,))
    call = {"indices_tuple": MultiSimilarityMiner(epsilon=0.2)(emb, labels)} if with_miner else {}
    ours = FastAPLoss(num_bins=num_bins, distance=LpDistance(power=power))
    theirs = ref_losses.FastAPLoss(num_bins=num_bins, distance=ref_distances.LpDistance(power=power))
    assert_same_as_reference(ours, theirs, (emb, labels), dtype, **call)


@requires_reference
def test_matches_reference_in_float16():
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(6)
    emb = torch.randn(32, 8).half()
    labels = torch.randint(0, 4, (32,))
    rtol, atol = tolerance(torch.float16)
    torch.testing.assert_close(FastAPLoss()(emb, labels), ref_losses.FastAPLoss()(emb, labels),
                               rtol=rtol, atol=atol)
