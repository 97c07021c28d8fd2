"""pair_row_logsumexp: log(1 + sum_n exp(anchor_rows[a] + other_rows[p] - c)) per listed pair."""

import math

import torch

from deepmetric.ops import blocked_triplets
from deepmetric.ops.pair_row_logsumexp import pair_row_logsumexp


def reference(anchor_rows, other_rows, pair_terms, a, p):
    """The definition, one pair at a time."""
    out = []
    for k in range(len(a)):
        f = anchor_rows[a[k]] + other_rows[p[k]] - pair_terms[k]
        out.append(torch.logsumexp(torch.cat([f, f.new_zeros(1)]), dim=0))
    return torch.stack(out)


def test_hand_computed_and_dropped_columns():
    anchor_rows = torch.tensor([[0.0, -math.inf], [1.0, 2.0]], dtype=torch.float64)
    other_rows = torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64)
    out = pair_row_logsumexp(anchor_rows, other_rows, torch.tensor([0.5, 1.0], dtype=torch.float64),
                             torch.tensor([0, 1]), torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([math.log(2), math.log(1 + math.e**0 + math.e**2)], dtype=torch.float64))


def test_equals_the_definition_across_chunks_with_gradients(monkeypatch):
    monkeypatch.setattr(blocked_triplets, "CELLS_PER_BLOCK", 12)
    g = torch.Generator().manual_seed(0)
    anchor_rows = torch.randn(6, 5, generator=g, dtype=torch.float64)
    anchor_rows[2, 1] = -math.inf
    anchor_rows.requires_grad_(True)
    other_rows = torch.randn(5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0, 0, 2, 3, 5, 5, 1])
    p = torch.tensor([1, 4, 0, 2, 3, 3, 0])
    pair_terms = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    got = pair_row_logsumexp(anchor_rows, other_rows, pair_terms, a, p)
    want = reference(anchor_rows, other_rows, pair_terms, a, p)
    torch.testing.assert_close(got, want)
    upstream = torch.randn(7, generator=g, dtype=torch.float64)
    inputs = (anchor_rows, other_rows, pair_terms)
    for x, y in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(want, inputs, upstream)):
        torch.testing.assert_close(x, y)
