"""masked_squared_hinge_sum: squared hinges against the mask's own mean, summed in one node."""

import pytest
import torch

from deepmetric.ops.masked_squared_hinge import masked_squared_hinge_sum

BOUNDS = [(None, None), (0, None), (0.01, 0.5), (None, 0.2)]


def reference(mat, mask, sigma, beta, low, high):
    """The definition on the listed cells."""
    values = mat[mask]
    hinges = torch.relu(sigma * values + beta * values.mean()) ** 2
    keep = torch.ones_like(hinges, dtype=torch.bool)
    if low is not None:
        keep &= hinges > low
    if high is not None:
        keep &= hinges < high
    return hinges[keep].sum(), int(keep.sum())


def test_hand_computed():
    mat = torch.tensor([[0.2, 0.9], [0.5, -0.4]])
    mask = torch.tensor([[True, True], [True, False]])
    # mean over the mask = 1.6 / 3; sigma -1, beta 1: hinges [mean - s]+ -> squares of 0.3333, 0, 0.0333
    total, count = masked_squared_hinge_sum(mat, mask, -1, 1, low=0)
    mean = 1.6 / 3
    assert count == 2
    assert total.item() == pytest.approx((mean - 0.2) ** 2 + (mean - 0.5) ** 2, rel=1e-6)


@pytest.mark.parametrize("low, high", BOUNDS)
@pytest.mark.parametrize("sigma, beta", [(-1, 0.99), (1, -1.01)])
def test_equals_the_definition_with_gradients(low, high, sigma, beta, dtype):
    torch.manual_seed(0)
    mat = torch.rand(7, 9, dtype=dtype, requires_grad=True)
    mask = torch.rand(7, 9) < 0.4
    total, count = masked_squared_hinge_sum(mat, mask, sigma, beta, low, high)
    want, want_count = reference(mat, mask, sigma, beta, low, high)
    assert count == want_count and want_count > 0
    torch.testing.assert_close(total, want)
    torch.testing.assert_close(torch.autograd.grad(total, mat)[0], torch.autograd.grad(want, mat)[0])


@pytest.mark.parametrize("low, high", BOUNDS)
def test_gradcheck_and_second_derivatives(low, high):
    torch.manual_seed(1)
    mat = torch.rand(5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(5, 6) < 0.5

    def loss(m):
        return masked_squared_hinge_sum(m, mask, -1, 0.9, low, high)[0]

    assert torch.autograd.gradcheck(loss, (mat,))
    assert torch.autograd.gradgradcheck(loss, (mat,))


def test_float16_is_close_to_float32():
    torch.manual_seed(2)
    mat = torch.rand(30, 40)
    mask = torch.rand(30, 40) < 0.3
    half, _ = masked_squared_hinge_sum(mat.half(), mask, 1, -1.01, low=0)
    single, _ = masked_squared_hinge_sum(mat, mask, 1, -1.01, low=0)
    torch.testing.assert_close(half.float(), single, rtol=1e-2, atol=1e-3)
