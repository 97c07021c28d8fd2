"""The masked / grouped log-sum-exp helpers used by the pair losses."""

import math

import pytest
import torch

import deepmetric.ops.masked_logsumexp as mlse
from deepmetric.ops.dtypes import accumulation_dtype
from deepmetric.ops.masked_logsumexp import grouped_logsumexp, masked_logsumexp


def reference_rows(x, mask, add_one, empty):
    out = []
    for row, keep in zip(x.tolist(), mask.tolist()):
        kept = [v for v, k in zip(row, keep) if k] + ([0.0] if add_one else [])
        out.append(math.log(sum(math.exp(v) for v in kept)) if kept else empty)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("fraction", [0.0, 1.0], ids=["dense-path", "sparse-path"])
@pytest.mark.parametrize("add_one", [False, True])
def test_rows_match_a_direct_sum_on_both_paths(fraction, add_one, monkeypatch):
    monkeypatch.setattr(mlse, "_SPARSE_FRACTION", fraction)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(5, 7, generator=g) < 0.4
    mask[2] = False  # an empty row
    out = masked_logsumexp(x, mask, add_one=add_one, empty=-7.0)
    torch.testing.assert_close(out, reference_rows(x, mask, add_one, 0.0 if add_one else -7.0))


@pytest.mark.parametrize("fraction", [0.0, 1.0], ids=["dense-path", "sparse-path"])
def test_empty_rows_have_finite_zero_gradients(fraction, monkeypatch):
    monkeypatch.setattr(mlse, "_SPARSE_FRACTION", fraction)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    sentinel_row = masked_logsumexp(x, mask, empty=None)
    assert sentinel_row[1].item() < -1e300 and torch.isfinite(sentinel_row).all()
    out = masked_logsumexp(x, mask)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[1] == 0) and torch.all(grad[~mask] == 0)
    torch.testing.assert_close(grad[2].sum().item(), 1.0)  # softmax weights sum to 1


def test_grouped_counts_repeats_and_marks_empty_groups():
    values = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    groups = torch.tensor([0, 2, 2, 0])
    out, has_any = grouped_logsumexp(values, groups, 4)
    assert has_any.tolist() == [True, False, True, False]
    assert out[0].item() == pytest.approx(math.log(1 + math.exp(2)))
    assert out[2].item() == pytest.approx(1 + math.log(2))
    assert out[1].item() == torch.finfo(torch.float64).min


def test_grouped_is_stable_for_large_values():
    out, _ = grouped_logsumexp(torch.tensor([1000.0, 1000.0]), torch.tensor([0, 0]), 1)
    assert out.item() == pytest.approx(1000 + math.log(2))


def test_half_precision_accumulates_in_float32():
    assert accumulation_dtype(torch.float16) == torch.float32
    assert accumulation_dtype(torch.bfloat16) == torch.float32
    assert accumulation_dtype(torch.float64) == torch.float64
