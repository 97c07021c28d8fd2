"""VICRegLoss: hand-computed terms, sub-loss entries, dtypes, bad inputs and the reference
library as an oracle."""

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.losses import VICRegLoss
from deepmetric.reducers import DoNothingReducer, SumReducer


def test_hand_computed_terms():
    z = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]], dtype=torch.float64)
    z_ref = torch.tensor([[1.0, 1.0], [2.0, 3.0], [4.0, 4.0]], dtype=torch.float64)
    loss = VICRegLoss(invariance_lambda=2, variance_mu=3, covariance_v=5, eps=0.0, reducer=DoNothingReducer())
    out = loss(z, ref_emb=z_ref)
    # invariance: mean squared difference per row, times 2
    torch.testing.assert_close(out["invariance_loss"]["losses"], torch.tensor([1.0, 4.0, 0.0], dtype=torch.float64))
    # Var(z) = [4, 3] -> std [2, 1.73]: both >= 1, no variance loss
    torch.testing.assert_close(out["variance_loss1"]["losses"], torch.zeros(2, dtype=torch.float64))
    # z_ref columns [1, 2, 4] and [1, 3, 4] both have variance 7/3 -> std > 1 as well
    torch.testing.assert_close(out["variance_loss2"]["losses"], torch.zeros(2, dtype=torch.float64))
    # cov(z)_01: centred [-2, 0, 2] and [-1, -1, 2] -> (2 + 0 + 4) / 2 = 3; twice, / D = 2 -> 9
    # cov(z_ref)_01: centred [-4/3, -1/3, 5/3] and [-5/3, 1/3, 4/3] -> (20 - 1 + 20) / 9 / 2 = 13/6
    expected_cov = 5 * (2 * 3.0**2 / 2 + 2 * (13 / 6) ** 2 / 2)
    assert out["covariance_loss"]["losses"].item() == pytest.approx(expected_cov, rel=1e-12)
    assert out["covariance_loss"]["reduction_type"] == "already_reduced"


def test_variance_term_pushes_collapsed_dimensions():
    z = torch.tensor([[0.0, 0.0], [0.2, 0.0]], dtype=torch.float64)
    out = VICRegLoss(variance_mu=1, eps=0.0, reducer=DoNothingReducer())(z, ref_emb=z.clone())
    std0 = (0.02) ** 0.5  # unbiased variance of [0, 0.2]
    expected = torch.tensor([(1 - std0) / 2, 0.5], dtype=torch.float64)
    torch.testing.assert_close(out["variance_loss1"]["losses"], expected)
    assert out["variance_loss1"]["indices"].tolist() == [0, 1]


def test_default_reduction_sums_the_four_means():
    torch.manual_seed(0)
    z, z_ref = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    out = VICRegLoss(reducer=DoNothingReducer())(z, ref_emb=z_ref)
    expected = sum(entry["losses"].mean() for entry in out.values())
    torch.testing.assert_close(VICRegLoss()(z, ref_emb=z_ref), expected)
    assert VICRegLoss().sub_loss_names() == ["invariance_loss", "variance_loss1", "variance_loss2", "covariance_loss"]


def test_without_ref_emb_the_views_coincide():
    z = torch.randn(5, 3)
    out = VICRegLoss(reducer=DoNothingReducer())(z)
    assert torch.all(out["invariance_loss"]["losses"] == 0)


def test_single_sample_gives_a_finite_loss_and_gradient():
    z = torch.randn(1, 4, requires_grad=True)
    value = VICRegLoss()(z, ref_emb=torch.randn(1, 4))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()


def test_gradcheck():
    torch.manual_seed(1)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    z_ref = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = VICRegLoss(reducer=SumReducer())
    assert torch.autograd.gradcheck(lambda a, b: loss(a, ref_emb=b), (z, z_ref))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_is_close_to_float32(half):
    torch.manual_seed(0)
    # Zc^T Zc reaches ~2.6e5 on the diagonal: past float16's range unless accumulated in float32
    z, z_ref = torch.randn(64, 32) * 8, torch.randn(64, 32) * 8
    expected = VICRegLoss()(z, ref_emb=z_ref)
    a, b = z.to(half).requires_grad_(True), z_ref.to(half)
    value = VICRegLoss()(a, ref_emb=b)
    value.backward()
    assert value.dtype == half and torch.isfinite(value) and torch.isfinite(a.grad.float()).all()
    torch.testing.assert_close(value.float(), expected, rtol=2e-2, atol=1e-1)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="distance"):
        VICRegLoss(distance=None)
    with pytest.raises(ValueError, match="regularizer"):
        VICRegLoss(embedding_regularizer=None)
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="labels"):
        VICRegLoss()(z, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="indices_tuple"):
        VICRegLoss()(z, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 3\)"):
        VICRegLoss()(z, ref_emb=torch.randn(5, 3))
    with pytest.raises(ValueError, match="same width"):
        VICRegLoss()(z, ref_emb=torch.randn(4, 2))


@requires_reference
@pytest.mark.parametrize("kwargs", [{}, {"invariance_lambda": 1, "variance_mu": 2, "covariance_v": 3, "eps": 1e-2}])
def test_matches_reference(kwargs, dtype):
    from pytorch_metric_learning.losses import VICRegLoss as RefVICRegLoss

    g = torch.Generator().manual_seed(2)
    z = (torch.randn(16, 8, generator=g) * 0.5).to(dtype)
    z_ref = (z + 0.3 * torch.randn(16, 8, generator=g).to(dtype))
    grads = []
    values = []
    for loss in (RefVICRegLoss(**kwargs), VICRegLoss(**kwargs)):
        a, b = z.clone().requires_grad_(True), z_ref.clone().requires_grad_(True)
        value = loss(a, ref_emb=b)
        value.backward()
        values.append(value)
        grads.append((a.grad, b.grad))
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(values[1], values[0], rtol=rtol * 10, atol=atol * 10)
    for ours, ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, ref, rtol=rtol * 10, atol=atol * 10)
