"""weighted_violation: exp-weighted mean of each row's selected violations (RankedListLoss)."""

import pytest
import torch

from deepmetric.ops.weighted_violation import weighted_violation


@pytest.mark.parametrize("temperature", [0.0, 1.3])
def test_weighted_violation_node_gradcheck_with_an_empty_row(temperature):
    torch.manual_seed(7)
    violation = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    selected = torch.rand(4, 6) > 0.4
    selected[2] = False  # a row with nothing selected is 0 and gets no gradient
    assert torch.autograd.gradcheck(lambda v: weighted_violation(v, selected, temperature), (violation,))
    out = weighted_violation(violation, selected, temperature)
    weights = torch.where(selected, torch.exp(temperature * violation), 0)
    expected = (weights * violation).sum(1) / (weights.sum(1) + 6 * 1e-5)
    torch.testing.assert_close(out, expected)
    assert out[2] == 0
