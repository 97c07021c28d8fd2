"""Squared hinges against a mask's own mean, summed over the kept cells, as one autograd node.

IntraPairVarianceLoss takes, over the cells of a mask (its positive or its negative pairs),

    h_ij = [sigma * s_ij + beta * mu]_+^2        mu = mean of s over the mask

and sums the ``h`` strictly inside ``(low, high)`` (in float32 for half-precision inputs). Built
from torch operations this is a chain of about twenty passes over the (N, M) matrix, forward and
backward; here the forward pass makes one pass per step and the gradient comes in closed form:

    d total / d s_ij = 2 * (sigma * r_ij + beta * sum(r) / |mask| * [ij in mask])

with ``r = [sigma * s + beta * mu]_+`` on the kept cells and 0 elsewhere (the kept set is a
selection, not differentiated, as in the plain formula).
"""

import torch

from .dtypes import accumulation_dtype
from .fused_backward import replayed_gradients, wants_graph_of_gradient


def masked_mean(mat, mask):
    """Mean of ``mat`` over the cells of the non-empty boolean ``mask``: ``torch.mean`` of the
    values listed row by row, so that it has the bits of the per-pair computation's mean (and the
    hinges are zero exactly where they are there)."""
    return torch.mean(mat[mask])


def squared_hinges(mat, mask, sigma, beta):
    """``[sigma * mat + beta * mean_mask(mat)]_+^2`` over the whole matrix (plain torch)."""
    return torch.nn.functional.relu(sigma * mat + beta * masked_mean(mat, mask)) ** 2


def _within(values, mask, low, high):
    kept = mask
    if low is not None:
        kept = kept & (values > low)
    if high is not None:
        kept = kept & (values < high)
    return kept


def _plain_masked_squared_hinge_sum(mat, mask, sigma, beta, low, high):
    hinges = squared_hinges(mat, mask, sigma, beta)
    zero = torch.zeros((), dtype=mat.dtype, device=mat.device)
    return torch.sum(torch.where(_within(hinges, mask, low, high), hinges, zero))


class _MaskedSquaredHingeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mat, mask, sigma, beta, low, high):
        zero = torch.zeros((), dtype=mat.dtype, device=mat.device)
        mask_count = int(torch.count_nonzero(mask))
        mean = masked_mean(mat, mask)
        hinge = torch.add(beta * mean, mat, alpha=sigma).clamp_min_(0)
        squares = hinge.square()
        kept = _within(squares, mask, low, high)
        kept_count = torch.count_nonzero(kept)
        kept_hinge = torch.where(kept, hinge, zero).flatten()
        # the rounded squares added up (in float32 at least), as a sum of the listed squares is
        total = torch.sum(torch.where(kept, squares, zero), dtype=accumulation_dtype(mat.dtype))
        ctx.save_for_backward(mat, mask, kept_hinge)
        ctx.constants = (sigma, beta, low, high, mask_count)
        ctx.mark_non_differentiable(kept_count)
        return total, kept_count

    @staticmethod
    def backward(ctx, grad, _):
        mat, mask, kept_hinge = ctx.saved_tensors
        sigma, beta, low, high, mask_count = ctx.constants
        if wants_graph_of_gradient():
            inputs = (mat, mask, sigma, beta, low, high)
            grad_mat = replayed_gradients(_plain_masked_squared_hinge_sum, inputs, grad)[0]
            return grad_mat, None, None, None, None, None
        scale = grad * 2
        through_mean = scale * (beta / mask_count) * kept_hinge.sum()
        grad_mat = kept_hinge.view_as(mat).mul(scale * sigma).add_(through_mean)
        zero = torch.zeros((), dtype=mat.dtype, device=mat.device)
        return torch.where(mask, grad_mat, zero), None, None, None, None, None


def masked_squared_hinge_sum(mat, mask, sigma, beta, low=None, high=None):
    """``(sum, count)`` of the squared hinges ``h_ij`` (module docstring) over the cells of the
    non-empty boolean ``mask`` with ``low < h_ij < high`` (``None``: no bound)."""
    total, count = _MaskedSquaredHingeSum.apply(mat, mask, float(sigma), float(beta), low, high)
    return total, int(count)
