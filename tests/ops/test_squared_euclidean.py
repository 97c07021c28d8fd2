"""squared_euclidean: cdist(q, r) ** 2 bit for bit, with a closed-form gradient (LpDistance(power=2))."""

import pytest
import torch

from deepmetric.ops.squared_euclidean import squared_euclidean


def test_hand_computed_and_self():
    q = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    r = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    torch.testing.assert_close(squared_euclidean(q, r), torch.tensor([[1.0, 25.0], [18.0, 0.0]]))
    torch.testing.assert_close(squared_euclidean(q, q), torch.tensor([[0.0, 25.0], [25.0, 0.0]]))


def test_values_are_cdist_squared_bit_for_bit(dtype):
    torch.manual_seed(0)
    q, r = torch.randn(40, 7, dtype=dtype), torch.randn(33, 7, dtype=dtype)
    assert torch.equal(squared_euclidean(q, r), torch.cdist(q, r) ** 2)


def test_gradients_equal_the_definition(dtype):
    torch.manual_seed(1)
    q = torch.randn(7, 5, dtype=dtype, requires_grad=True)
    r = torch.randn(6, 5, dtype=dtype, requires_grad=True)
    got = squared_euclidean(q, r)
    want = ((q.unsqueeze(1) - r.unsqueeze(0)) ** 2).sum(-1)
    upstream = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, r), upstream), torch.autograd.grad(want, (q, r), upstream)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("same", [False, True])
def test_gradcheck_second_derivatives_and_zero_distance(same):
    torch.manual_seed(2)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(4, 3, dtype=torch.float64)

    def f(a):
        return squared_euclidean(a, a if same else ref)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    twice = x.detach().repeat(2, 1).requires_grad_(True)  # rows at distance 0 from each other
    (g,) = torch.autograd.grad(squared_euclidean(twice, twice).sum(), twice)
    assert bool(torch.isfinite(g).all())


def test_half_precision_is_computed_in_float32():
    torch.manual_seed(3)
    q, r = torch.randn(9, 4), torch.randn(8, 4)
    half = squared_euclidean(q.half(), r.half())
    assert half.dtype == torch.float16
    assert torch.equal(half, torch.cdist(q.half().float(), r.half().float()).half() ** 2)
