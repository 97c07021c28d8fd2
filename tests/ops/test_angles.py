"""safe_acos: acos with a gradient that stays finite at +-1."""

import math

import torch

from deepmetric.ops.angles import safe_acos


def test_values_are_acos_of_the_clamped_cosine():
    c = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.2], dtype=torch.float64)
    expected = torch.tensor([math.pi, math.pi, 2 * math.pi / 3, math.pi / 2, math.pi / 3, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(safe_acos(c), expected)


def test_gradient_inside_is_the_derivative_and_zero_at_the_ends():
    c = torch.tensor([-1.0, -0.6, 0.0, 0.8, 1.0 - 1e-9, 1.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(safe_acos(c).sum(), c)
    inside = torch.tensor([-0.6, 0.0, 0.8], dtype=torch.float64)
    torch.testing.assert_close(g[1:4], -1 / torch.sqrt(1 - inside**2))
    assert g[0] == 0 and g[4] == 0 and g[5] == 0
    x = torch.tensor([-0.9, -0.2, 0.3, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(safe_acos, (x,))
    assert torch.autograd.gradgradcheck(safe_acos, (x,))
