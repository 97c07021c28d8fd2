"""Exponentially weighted mean of each row's selected violations, as one node (RankedListLoss):

    L_i = sum_j w_ij v_ij / (sum_j w_ij + M * eps),     w = exp(T v) on the selected cells, 0 elsewhere

with ``eps = 1e-5`` (so a row without violations divides by a small positive number). The
gradient has the closed form

    dL_i / dv_ij = w_ij (1 + T (v_ij - L_i)) / (sum_j w_ij + M * eps)

so the backward pass is three passes over the matrix instead of a chain of where/exp/mul/sum.
"""

import torch

from .fused_backward import replayed_gradients, wants_graph_of_gradient

# Added once per column to each row's weight sum, so rows without violations divide by a
# small positive number instead of zero (the reference's constant).
_WEIGHT_EPS = 1e-5


def _plain_weighted_violation(violation, selected, temperature):
    """``weighted_violation`` from plain torch operations (what second derivatives are taken of)."""
    exponent = torch.where(selected, temperature * violation, 0)
    weights = torch.where(selected, torch.exp(exponent), 0)
    denominator = weights.sum(dim=1) + violation.shape[1] * _WEIGHT_EPS
    return (weights * violation).sum(dim=1) / denominator


class _WeightedViolation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, violation, selected, temperature):
        # The exponent is masked before exp, so an unselected cell can never overflow.
        if temperature == 0:
            weights = selected.to(violation.dtype)
        else:
            weights = torch.where(selected, violation, 0).mul_(temperature).exp_().mul_(selected)
        denominator = weights.sum(dim=1) + violation.shape[1] * _WEIGHT_EPS
        losses = torch.linalg.vecdot(weights, violation, dim=1) / denominator
        ctx.save_for_backward(violation, weights, denominator, losses, selected)
        ctx.temperature = temperature
        return losses

    @staticmethod
    def backward(ctx, grad):
        violation, weights, denominator, losses, selected = ctx.saved_tensors
        if wants_graph_of_gradient():
            inputs = (violation, selected, ctx.temperature)
            return replayed_gradients(_plain_weighted_violation, inputs, grad)
        row_scale = (grad / denominator).unsqueeze(1)
        if ctx.temperature == 0:
            return weights * row_scale, None, None
        slope = (violation - losses.unsqueeze(1)).mul_(ctx.temperature).add_(1)
        return slope.mul_(weights).mul_(row_scale), None, None


def weighted_violation(violation, selected, temperature):
    """``(N,)`` values ``L_i`` (module docstring) of ``violation`` ``(N, M)`` under the boolean
    ``selected``."""
    return _WeightedViolation.apply(violation, selected, temperature)
