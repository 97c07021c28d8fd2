"""l2_normalize_rows: row normalisation as one node (used by every normalising distance)."""

import pytest
import torch

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.ops.unit_rows import l2_normalize_rows


def reference_normalize(x):
    """The definition: each row divided by max(its L2 norm, 1e-12)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def test_hand_computed():
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0], [0.0, 0.0]])
    expected = torch.tensor([[0.6, 0.8], [0.0, -1.0], [0.0, 0.0]])
    torch.testing.assert_close(l2_normalize_rows(x), expected)


def test_values_equal_f_normalize_bit_for_bit_and_gradients_match(any_dtype):
    torch.manual_seed(0)
    x = torch.randn(9, 5, dtype=any_dtype, requires_grad=True)
    fused = l2_normalize_rows(x)
    plain = torch.nn.functional.normalize(x, dim=1)
    assert torch.equal(fused, plain)
    torch.testing.assert_close(reference_normalize(x.detach().double()).to(any_dtype), fused.detach(),
                               rtol=1e-2 if any_dtype == torch.float16 else 1e-6, atol=1e-3 if any_dtype == torch.float16 else 1e-7)
    upstream = torch.randn_like(fused)
    (a,) = torch.autograd.grad(fused, x, upstream)
    (b,) = torch.autograd.grad(plain, x, upstream)
    tol = {"rtol": 1e-2, "atol": 1e-2} if any_dtype == torch.float16 else {}
    torch.testing.assert_close(a, b, **tol)


def test_gradcheck_second_derivatives_and_a_zero_row():
    torch.manual_seed(1)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(l2_normalize_rows, (x,))
    assert torch.autograd.gradgradcheck(l2_normalize_rows, (x,))
    # a zero row has a clamped norm, so its divisor is a constant, as in F.normalize
    z = x.detach().clone()
    z[2] = 0
    z.requires_grad_(True)
    (g,) = torch.autograd.grad(l2_normalize_rows(z).sum(), z)
    (expected,) = torch.autograd.grad(torch.nn.functional.normalize(z, dim=1).sum(), z)
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance(), LpDistance(power=2)])
def test_distances_normalise_with_it(distance):
    torch.manual_seed(2)
    q = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    r = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    mat = distance(q, r)
    qn, rn = reference_normalize(q), reference_normalize(r)
    if isinstance(distance, CosineSimilarity):
        expected = qn @ rn.T
    else:
        expected = torch.cdist(qn, rn) ** distance.power
    torch.testing.assert_close(mat, expected)
    for got, want in zip(torch.autograd.grad(mat.sum(), (q, r)), torch.autograd.grad(expected.sum(), (q, r))):
        torch.testing.assert_close(got, want)
