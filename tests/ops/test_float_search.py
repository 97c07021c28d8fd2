"""Tests of deepmetric.ops.float_search: exact thresholds of rounded tests."""

import pytest
import torch

from deepmetric.ops.float_search import float_to_key, key_to_float, smallest_true

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_keys_are_ordered_as_the_floats_and_invert(dtype):
    tiny = torch.finfo(dtype).tiny
    x = torch.tensor([-float("inf"), -2.5, -tiny, -0.0, 0.0, tiny, 1.0, 3.0, float("inf")], dtype=dtype)
    keys = float_to_key(x)
    assert bool((keys[1:] > keys[:-1]).all())
    assert torch.equal(key_to_float(keys, dtype), x)
    # adjacent keys are adjacent floats
    assert float(key_to_float(float_to_key(torch.tensor([1.0], dtype=dtype)) + 1, dtype)) == (
        1.0 + torch.finfo(dtype).eps
    )


def _rounded_hinge(a, margin):
    # the per-triplet test of TripletMarginLoss, as a function of x = -d_an
    return lambda x: torch.relu((a - (-x)) + margin) > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_smallest_true_is_the_exact_boundary_of_a_rounded_test(dtype):
    torch.manual_seed(0)
    a = torch.rand(200, dtype=torch.float64).to(dtype)
    test = _rounded_hinge(a, 0.05)
    bound = smallest_true(test, (-a.double() - 0.05).to(dtype), 0.01)
    below = key_to_float(float_to_key(bound) - 1, dtype)
    assert bool(test(bound).all()) and not bool(test(below).any())
    # the real-arithmetic bound -(a + margin) is not always the rounded one
    if dtype == torch.float32:
        assert not torch.equal(bound, (-(a + 0.05)))


def test_smallest_true_does_not_depend_on_the_guess():
    a = torch.rand(50, dtype=torch.float64)
    test = _rounded_hinge(a, 0.3)
    good = smallest_true(test, -a - 0.3, 1e-12)
    for guess, slack in [(torch.zeros(50, dtype=torch.float64), 0.0), (-a - 0.3 + 1, 1e-9), (a * float("nan"), 1)]:
        assert torch.equal(smallest_true(test, guess, slack), good)


def test_smallest_true_of_a_test_true_everywhere_is_minus_infinity():
    out = smallest_true(lambda x: x == x, torch.zeros(3), 1.0)
    assert bool(torch.isneginf(out).all())
