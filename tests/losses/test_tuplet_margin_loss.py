"""TupletMarginLoss: hand-computed values, per-anchor negatives, miner pairs, reference sets,
statistics, dtypes, gradients and the reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import LpDistance
from deepmetric.losses import TupletMarginLoss
from deepmetric.reducers import DoNothingReducer, SumReducer
from deepmetric.utils import loss_and_miner_utils as lmu

THETA, BETA = math.radians(60), math.radians(10)


def triangle(dtype=torch.float64):
    emb = torch.tensor([[1.0, 0.0], [math.cos(THETA), math.sin(THETA)], [0.0, 1.0]], dtype=dtype)
    return emb.requires_grad_(True), torch.tensor([0, 0, 1])


def test_hand_computed(dtype):
    emb, labels = triangle(dtype)
    out = TupletMarginLoss(margin=10, scale=2, reducer=DoNothingReducer())(emb, labels)["loss"]
    c = math.cos(THETA - BETA)
    expected = [math.log1p(math.exp(2 * (0 - c))), math.log1p(math.exp(2 * (math.sin(THETA) - c)))]
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(out["losses"], torch.tensor(expected, dtype=dtype), rtol=rtol * 10, atol=atol * 10)
    assert out["reduction_type"] == "pos_pair"
    assert [x.tolist() for x in out["indices"]] == [[0, 1], [1, 0]]


def test_margin_is_stored_in_radians_and_recorded():
    loss = TupletMarginLoss(margin=5.73, scale=64)
    assert loss.margin == pytest.approx(math.radians(5.73))
    assert {"margin", "scale"} <= set(loss._record_these)


def test_miner_negatives_are_grouped_by_anchor():
    emb, labels = triangle()
    # positive (0, 1); negatives (0, 2) twice and (1, 2), which belongs to another anchor
    tup = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 0, 1]), torch.tensor([2, 2, 2]))
    out = TupletMarginLoss(margin=10, scale=2, reducer=DoNothingReducer())(emb, labels, tup)
    c = math.cos(THETA - BETA)
    assert out["loss"]["losses"].item() == pytest.approx(math.log1p(2 * math.exp(-2 * c)))


def test_anchor_without_negatives_contributes_zero():
    emb, labels = triangle()
    tup = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0]), torch.tensor([2]))
    out = TupletMarginLoss(margin=10, scale=2, reducer=DoNothingReducer())(emb, labels, tup)
    losses = out["loss"]["losses"]
    assert losses[1].item() == 0
    losses.sum().backward()
    assert torch.isfinite(emb.grad).all()


def test_label_path_equals_pair_list_path(dtype):
    torch.manual_seed(0)
    emb = torch.randn(20, 5, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    loss = TupletMarginLoss(reducer=SumReducer())
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 100, atol=atol * 100)


def test_identical_embeddings_give_finite_gradients():
    emb = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, -1.0]], requires_grad=True)
    out = TupletMarginLoss()(emb, torch.tensor([0, 0, 1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = TupletMarginLoss(scale=4)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))
    tup = lmu.get_all_pairs_indices(labels)
    assert torch.autograd.gradcheck(lambda e: loss(e, indices_tuple=tup), (emb,))


def test_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(32, 8)
    labels = torch.randint(0, 4, (32,))
    full = TupletMarginLoss()(emb, labels)
    half = TupletMarginLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, 0, 0], [5]], ids=["no-positives", "single-class", "batch-of-1"])
def test_no_pairs_gives_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = TupletMarginLoss()(emb, torch.tensor(labels))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)


def test_bad_inputs_are_rejected():
    with pytest.raises(AssertionError, match="CosineSimilarity"):
        TupletMarginLoss(distance=LpDistance())
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        TupletMarginLoss()(torch.randn(4, 3))


def test_angle_statistics():
    emb, labels = triangle()
    loss = TupletMarginLoss(collect_stats=True)
    loss(emb, labels)
    # positive angle 60 deg; negatives (0, 2) at 90 deg and (1, 2) at 30 deg, each twice
    assert loss.avg_pos_angle == pytest.approx(60)
    assert loss.avg_neg_angle == pytest.approx(60)


@requires_reference
@pytest.mark.parametrize("use_miner", [False, True], ids=["all", "miner"])
@pytest.mark.parametrize("use_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("kwargs", [{}, {"margin": 20, "scale": 8}], ids=["default", "custom"])
def test_matches_reference(kwargs, use_miner, use_ref, dtype):
    from pytorch_metric_learning import losses as ref_losses
    from pytorch_metric_learning import miners as ref_miners

    torch.manual_seed(0)
    emb = torch.randn(32, 6, dtype=dtype)
    labels = torch.randint(0, 4, (32,))
    ref = torch.randn(20, 6, dtype=dtype) if use_ref else None
    ref_labels = torch.randint(0, 4, (20,)) if use_ref else None
    tup = ref_miners.MultiSimilarityMiner(epsilon=0.1)(emb, labels, ref, ref_labels) if use_miner else None
    results = []
    for loss in (TupletMarginLoss(collect_stats=True, **kwargs),
                 ref_losses.TupletMarginLoss(collect_stats=True, **kwargs)):
        e = emb.clone().requires_grad_(True)
        r = ref.clone().requires_grad_(True) if use_ref else None
        out = loss(e, labels, tup, r, ref_labels)
        grads = torch.autograd.grad(out, [e] + ([r] if use_ref else []))
        results.append((out, grads, loss.avg_pos_angle, loss.avg_neg_angle))
    (ours, g_ours, *angles_ours), (theirs, g_theirs, *angles_theirs) = results
    rtol, atol = (1e-4, 1e-5) if dtype == torch.float32 else (1e-9, 1e-10)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    assert angles_ours == pytest.approx(angles_theirs, rel=1e-5)


def test_large_batch_stays_linear_in_pairs():
    # 2048 samples in 4 classes: ~1M positive x ~3M negative pairs would be needed per anchor
    # group if every (positive, negative) combination were formed.
    torch.manual_seed(5)
    emb = torch.randn(2048, 16, requires_grad=True)
    out = TupletMarginLoss()(emb, torch.arange(2048) % 4)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_terms_are_exactly_zero_where_one_plus_exp_rounds_to_one():
    # log(1 + sum exp(...)) is exactly 0 in the reference once the sum is below half an ulp of 1;
    # AvgNonZeroReducer counts the terms that are not.
    from deepmetric.losses.tuplet_margin_loss import _log_one_plus_exp

    z = torch.tensor([-30.0, -17.0, -15.0, 0.0])
    out = _log_one_plus_exp(z)
    assert out[0] == 0 and out[1] == 0  # exp(-17) = 4e-8 < 2**-24
    assert out[2] > 0 and torch.isclose(out[3], torch.tensor(math.log(2)))
    z64 = torch.tensor([-40.0, -30.0], dtype=torch.float64)
    assert _log_one_plus_exp(z64)[0] == 0 and _log_one_plus_exp(z64)[1] > 0
