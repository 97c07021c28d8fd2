"""squared_euclidean: |q|^2 + |r|^2 - 2 q.r, clamped at 0 (LpDistance(power=2))."""

import torch

from deepmetric.ops.squared_euclidean import squared_euclidean


def test_hand_computed_and_self():
    q = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    r = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    torch.testing.assert_close(squared_euclidean(q, r), torch.tensor([[1.0, 25.0], [18.0, 0.0]]))
    torch.testing.assert_close(squared_euclidean(q, q), torch.tensor([[0.0, 25.0], [25.0, 0.0]]))


def test_equals_the_definition_with_gradients(dtype):
    torch.manual_seed(0)
    q = torch.randn(7, 5, dtype=dtype, requires_grad=True)
    r = torch.randn(6, 5, dtype=dtype, requires_grad=True)
    got = squared_euclidean(q, r)
    want = ((q.unsqueeze(1) - r.unsqueeze(0)) ** 2).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, (q, r), upstream), torch.autograd.grad(want, (q, r), upstream)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_never_negative_and_finite_gradient_at_zero_distance():
    x = torch.randn(5, 3, dtype=torch.float64).repeat(2, 1).requires_grad_(True)
    d = squared_euclidean(x, x)
    assert bool((d >= 0).all())
    (g,) = torch.autograd.grad(d.sum(), x)
    assert bool(torch.isfinite(g).all())
    ref = torch.randn(3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: squared_euclidean(a, ref), (x,))
    assert torch.autograd.gradcheck(lambda a: squared_euclidean(a, a), (x[:4].detach().requires_grad_(),))
