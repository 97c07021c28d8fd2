"""The fused squared-hinge-against-the-mask-mean node behind IntraPairVarianceLoss's dense path:
hand-computed values, equality with the plain formula, gradients and second derivatives."""

import pytest
import torch

from deepmetric.losses.masked_squared_hinge import (
    MaskedSquaredHinge,
    _plain_masked_squared_hinge,
    masked_squared_hinge,
)
from deepmetric.losses.reduction_shortcut import PlainReduction

REDUCTIONS = {
    "avg_non_zero": PlainReduction("mean", low=0),
    "mean": PlainReduction("mean"),
    "sum": PlainReduction("sum"),
    "threshold": PlainReduction("mean", low=0.01, high=0.5),
}


def test_hand_computed():
    mat = torch.tensor([[0.2, 0.9], [0.5, -0.4]])
    mask = torch.tensor([[True, True], [True, False]])
    # mean over the mask = (0.2 + 0.9 + 0.5) / 3 = 0.5333; sigma -1, beta 1: hinges [0.5333 - s]+
    # = 0.3333, 0, 0.0333 -> squares 0.1111, 0, 0.00111; the mean of the two non-zero ones
    entry = masked_squared_hinge(mat, mask, -1, 1, REDUCTIONS["avg_non_zero"])
    mean = 1.6 / 3
    expected = ((mean - 0.2) ** 2 + (mean - 0.5) ** 2) / 2
    assert entry["reduction_type"] == "already_reduced"
    assert entry["losses"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
@pytest.mark.parametrize("sigma, beta", [(-1, 0.99), (1, -1.01)])
def test_equals_the_plain_formula_with_gradients(reduction, sigma, beta, dtype):
    torch.manual_seed(0)
    mat = torch.rand(7, 9, dtype=dtype, requires_grad=True)
    mask = torch.rand(7, 9) < 0.4
    fused, _ = MaskedSquaredHinge.apply(mat, mask, sigma, beta, REDUCTIONS[reduction])
    plain = _plain_masked_squared_hinge(mat, mask, sigma, beta, REDUCTIONS[reduction])
    assert plain.item() != 0
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(torch.autograd.grad(fused, mat)[0], torch.autograd.grad(plain, mat)[0])


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
def test_gradcheck_and_second_derivatives(reduction):
    torch.manual_seed(1)
    mat = torch.rand(5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(5, 6) < 0.5

    def loss(m):
        return MaskedSquaredHinge.apply(m, mask, -1, 0.9, REDUCTIONS[reduction])[0]

    assert torch.autograd.gradcheck(loss, (mat,))
    assert torch.autograd.gradgradcheck(loss, (mat,))


def test_nothing_kept_gives_the_zero_entry():
    mat = torch.tensor([[1.0, 1.0]], requires_grad=True)
    entry = masked_squared_hinge(mat, torch.tensor([[True, True]]), -1, 1, REDUCTIONS["avg_non_zero"])
    assert entry["losses"] == 0 and entry["indices"] is None


def test_float16_is_close_to_float32():
    torch.manual_seed(2)
    mat = torch.rand(30, 40)
    mask = torch.rand(30, 40) < 0.3
    half = masked_squared_hinge(mat.half(), mask, 1, -1.01, REDUCTIONS["avg_non_zero"])["losses"]
    single = masked_squared_hinge(mat, mask, 1, -1.01, REDUCTIONS["avg_non_zero"])["losses"]
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), single, rtol=1e-2, atol=1e-3)
