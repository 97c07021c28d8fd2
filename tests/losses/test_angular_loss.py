"""AngularLoss: hand-computed values, blocked computation, miner pairs, reference sets,
statistics, dtypes, gradients and the reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import AngularLoss
from deepmetric.ops import blocked_triplets
from deepmetric.reducers import DoNothingReducer, SumReducer
from deepmetric.utils import loss_and_miner_utils as lmu


def test_hand_computed_uses_raw_negatives(dtype):
    # alpha = 45 deg -> t = 1: f = 4 (a + p) . r_n - 4 a . p, r_n not normalised.
    emb = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    out = AngularLoss(alpha=45, reducer=DoNothingReducer())(emb, labels)["loss"]
    # pairs (0, 1) and (1, 0): a + p = (1, 1), a . p = 0 -> f = 4 * 2 = 8
    expected = math.log1p(math.exp(8))
    torch.testing.assert_close(out["losses"], torch.tensor([expected, expected], dtype=dtype))
    assert out["reduction_type"] == "pos_pair"
    assert [x.tolist() for x in out["indices"]] == [[0, 1], [1, 0]]


def test_hand_computed_sums_over_all_negatives_of_the_anchor():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])
    t = math.tan(math.radians(30)) ** 2
    out = AngularLoss(alpha=30, reducer=DoNothingReducer())(emb, labels)["loss"]["losses"]
    # a = p = (1, 0): (a + p) . r = 0 for both negatives; a . p = 1
    f = -2 * (1 + t)
    torch.testing.assert_close(out, torch.full((2,), math.log1p(2 * math.exp(f)), dtype=torch.float64))


def test_alpha_is_stored_in_radians():
    loss = AngularLoss(alpha=40)
    assert loss.alpha.dtype == torch.float64
    assert loss.alpha.item() == pytest.approx(math.radians(40))
    assert "alpha" in loss._record_these


def test_blocks_do_not_change_values_or_gradients(dtype, monkeypatch):
    torch.manual_seed(0)
    emb = torch.randn(30, 6, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (30,))
    loss = AngularLoss(reducer=SumReducer())
    whole = loss(emb, labels)
    (g_whole,) = torch.autograd.grad(whole, emb)
    monkeypatch.setattr(blocked_triplets, "CELLS_PER_BLOCK", 45)
    blocked = loss(emb, labels)
    (g_blocked,) = torch.autograd.grad(blocked, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(whole, blocked, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_whole, g_blocked, rtol=rtol * 10, atol=atol * 10)


def test_miner_pairs_use_only_positive_pairs():
    torch.manual_seed(1)
    emb = torch.randn(10, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (10,))
    a1, p, a2, n = lmu.get_all_pairs_indices(labels)
    loss = AngularLoss(reducer=DoNothingReducer())
    full = loss(emb, labels)["loss"]["losses"]
    some = loss(emb, labels, (a1[:3], p[:3], a2[:1], n[:1]))["loss"]["losses"]
    torch.testing.assert_close(some, full[:3])


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 0, 1])
    loss = AngularLoss(alpha=35)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))
    assert torch.autograd.gradcheck(lambda e, r: loss(e, labels, ref_emb=r, ref_labels=ref_labels), (emb, ref))


def test_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(32, 8)
    labels = torch.randint(0, 4, (32,))
    full = AngularLoss()(emb, labels)
    half = AngularLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, 0, 0], [5]], ids=["no-positives", "single-class", "batch-of-1"])
def test_no_pairs_gives_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = AngularLoss()(emb, torch.tensor(labels))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)


def test_large_norms_stay_finite():
    torch.manual_seed(5)
    emb = (torch.randn(16, 4) * 1e3).requires_grad_(True)
    out = AngularLoss()(emb, torch.arange(16) % 4)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels"):
        AngularLoss()(torch.randn(4, 3))
    with pytest.raises(ValueError, match="ref_labels"):
        AngularLoss()(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), ref_emb=torch.randn(3, 3))
    with pytest.raises(AssertionError):
        AngularLoss(distance=CosineSimilarity())
    with pytest.raises(ValueError, match="power"):
        AngularLoss(distance=LpDistance(power=2))


def test_average_angle_statistic():
    # a = (1, 0), p = (0, 1) (normalised), negative r = (1, 1):
    # |a - p| = sqrt2, center (.5, .5), |center - r| = sqrt(.5) -> atan(sqrt2 / (2 sqrt .5)) = 45 deg
    emb = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    loss = AngularLoss(collect_stats=True)
    loss(emb, torch.tensor([0, 0, 1]))
    assert loss.average_angle == pytest.approx(45.0)


def _oracle(kwargs, use_miner, use_ref, dtype=torch.float64, seed=0):
    from pytorch_metric_learning import losses as ref_losses
    from pytorch_metric_learning import miners as ref_miners

    torch.manual_seed(seed)
    emb = torch.randn(32, 6, dtype=dtype) * 2
    labels = torch.randint(0, 4, (32,))
    ref = torch.randn(20, 6, dtype=dtype) if use_ref else None
    ref_labels = torch.randint(0, 4, (20,)) if use_ref else None
    tup = ref_miners.MultiSimilarityMiner(epsilon=0.1)(emb, labels, ref, ref_labels) if use_miner else None
    results = []
    for loss in (AngularLoss(collect_stats=True, **kwargs), ref_losses.AngularLoss(collect_stats=True, **kwargs)):
        e = emb.clone().requires_grad_(True)
        r = ref.clone().requires_grad_(True) if use_ref else None
        out = loss(e, labels, tup, r, ref_labels)
        grads = torch.autograd.grad(out, [e] + ([r] if use_ref else []))
        results.append((out, grads, loss.average_angle))
    return results


@requires_reference
@pytest.mark.parametrize("use_miner", [False, True], ids=["all", "miner"])
@pytest.mark.parametrize("use_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("alpha", [40, 25])
def test_matches_reference(alpha, use_miner, use_ref, dtype):
    (ours, g_ours, angle_ours), (theirs, g_theirs, angle_theirs) = _oracle({"alpha": alpha}, use_miner, use_ref, dtype)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)
    assert angle_ours == pytest.approx(angle_theirs, rel=1e-4)
