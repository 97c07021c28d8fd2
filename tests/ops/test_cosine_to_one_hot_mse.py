"""cosine_to_one_hot_mse: P2SGradLoss's mean squared error of clamped cosines against one-hot targets."""

import torch

from deepmetric.ops.cosine_to_one_hot_mse import cosine_to_one_hot_mse


def reference(x, weight, labels):
    """The definition, cell by cell."""
    total = x.new_zeros(())
    for i in range(x.shape[0]):
        for j in range(weight.shape[1]):
            cos = torch.clamp(torch.dot(x[i], weight[:, j]) / x[i].norm(), -1, 1)
            total = total + (cos - (1.0 if labels[i] == j else 0.0)) ** 2
    return total / (x.shape[0] * weight.shape[1])


def test_equals_the_definition_with_gradients_and_second_derivatives():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=0)
    weight.requires_grad_(True)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    got, want = cosine_to_one_hot_mse(x, weight, labels), reference(x, weight, labels)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (x, weight)), torch.autograd.grad(want, (x, weight))):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradgradcheck(lambda a, w: cosine_to_one_hot_mse(a, w, labels), (x, weight))


def test_clamped_cosines_pass_no_gradient():
    # a weight column longer than 1 pushes some cosines past 1, where the clamp stops the gradient
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[2.0], [0.0]], dtype=torch.float64, requires_grad=True)
    out = cosine_to_one_hot_mse(x, weight, torch.tensor([0]))
    assert out.item() == 0
    (gx, gw) = torch.autograd.grad(out, (x, weight))
    assert bool((gx == 0).all()) and bool((gw == 0).all())
