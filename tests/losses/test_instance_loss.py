"""InstanceLoss: hand-computed values, label ranks as targets, unsupported arguments, dtypes,
gradients and the reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import InstanceLoss
from deepmetric.reducers import DoNothingReducer, SumReducer


def test_hand_computed(dtype):
    # cosines: s01 = 0, s02 = 1/sqrt2, s12 = 1/sqrt2; labels 7, 3, 7 -> targets 1, 0, 1
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=dtype, requires_grad=True)
    out = InstanceLoss(gamma=2, reducer=DoNothingReducer())(emb, torch.tensor([7, 3, 7]))["loss"]
    c = 1 / math.sqrt(2)
    rows = [[1, 0, c], [0, 1, c], [c, c, 1]]
    targets = [1, 0, 1]
    expected = [math.log(sum(math.exp(2 * v) for v in row)) - 2 * row[t] for row, t in zip(rows, targets)]
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(out["losses"], torch.tensor(expected, dtype=dtype), rtol=rtol * 10, atol=atol * 10)
    assert out["reduction_type"] == "element"
    assert out["indices"].tolist() == [0, 1, 2]


def test_default_reducer_is_the_mean():
    torch.manual_seed(0)
    emb = torch.randn(8, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (8,))
    mean = InstanceLoss()(emb, labels)
    total = InstanceLoss(reducer=SumReducer())(emb, labels)
    assert mean.item() == pytest.approx(total.item() / 8)


def test_records_gamma():
    loss = InstanceLoss(gamma=10)
    assert loss.gamma == 10 and "gamma" in loss._record_these


def test_batch_of_one_is_zero_with_gradient_path():
    emb = torch.randn(1, 4, requires_grad=True)
    out = InstanceLoss()(emb, torch.tensor([3]))
    assert out.item() == pytest.approx(0.0, abs=1e-6)
    out.backward()
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]], ids=["single-class", "all-distinct"])
def test_degenerate_label_sets_are_finite(labels):
    torch.manual_seed(1)
    emb = torch.randn(4, 3, requires_grad=True)
    out = InstanceLoss()(emb, torch.tensor(labels))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([4, 4, 1, 1, 9, 9])
    loss = InstanceLoss(gamma=3)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(16, 8)
    labels = torch.randint(0, 4, (16,))
    full = InstanceLoss(gamma=8)(emb, labels)
    half = InstanceLoss(gamma=8)(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)


def test_unsupported_arguments_are_rejected():
    emb, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="labels"):
        InstanceLoss()(emb)
    with pytest.raises(ValueError, match="indices_tuple"):
        InstanceLoss()(emb, labels, indices_tuple=(torch.tensor([0]),) * 3)
    with pytest.raises(ValueError, match="ref_emb"):
        InstanceLoss()(emb, labels, ref_emb=torch.randn(2, 3), ref_labels=torch.tensor([0, 1]))
    with pytest.raises(AssertionError, match="CosineSimilarity"):
        InstanceLoss(distance=LpDistance())


def test_default_distance_is_cosine():
    assert isinstance(InstanceLoss().distance, CosineSimilarity)


@requires_reference
@pytest.mark.parametrize("gamma", [64, 5])
def test_matches_reference(gamma, dtype):
    from pytorch_metric_learning import losses as ref_losses

    torch.manual_seed(0)
    emb = torch.randn(32, 6, dtype=dtype)
    labels = torch.randint(0, 10, (32,)) * 3
    results = []
    for loss in (InstanceLoss(gamma=gamma), ref_losses.InstanceLoss(gamma=gamma)):
        e = emb.clone().requires_grad_(True)
        out = loss(e, labels)
        results.append((out, torch.autograd.grad(out, e)[0]))
    (ours, g_ours), (theirs, g_theirs) = results
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_ours, g_theirs, rtol=rtol * 10, atol=atol * 10)
