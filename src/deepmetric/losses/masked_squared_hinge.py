"""Squared hinges against a mask's own mean, reduced over the mask, as one autograd node.

IntraPairVarianceLoss takes, over the cells of a mask (its positive or its negative pairs),

    h_ij = [sigma * s_ij + beta * mu]_+^2        mu = mean of s over the mask

and reduces the ``h`` that the reducer keeps (a :class:`PlainReduction`). Built from torch
operations this is a chain of about twenty passes over the (N, M) matrix, forward and backward;
here the forward pass makes one pass per step and the gradient comes in closed form:

    d total / d s_ij = 2 * (sigma * r_ij + beta * sum(r) / |mask| * [ij in mask])

with ``r = [sigma * s + beta * mu]_+`` on the kept cells and 0 elsewhere (the kept set is a
selection, not differentiated, as in the plain formula).
"""

import torch

from ..utils.fused_backward import replayed_gradients, wants_graph_of_gradient
from .reduction_shortcut import already_reduced


def _plain_masked_squared_hinge(mat, mask, sigma, beta, reduction):
    zero = torch.zeros((), dtype=mat.dtype, device=mat.device)
    mean = torch.mean(mat[mask])
    hinges = torch.nn.functional.relu(sigma * mat + beta * mean) ** 2
    kept = reduction.kept_within(hinges, mask)
    total = torch.sum(torch.where(kept, hinges, zero))
    return total / max(int(torch.count_nonzero(kept)), 1) if reduction.kind == "mean" else total


class MaskedSquaredHinge(torch.autograd.Function):
    """``(loss, kept count)`` for ``mat`` ``(N, M)``, a non-empty boolean ``mask`` of its shape,
    the constants ``sigma`` and ``beta`` and a :class:`PlainReduction`. A mean over no kept cell
    is 0 (the caller reports a zero loss then)."""

    @staticmethod
    def forward(ctx, mat, mask, sigma, beta, reduction):
        zero = torch.zeros((), dtype=mat.dtype, device=mat.device)
        # The mean of the listed values (row-major, as the pairs are listed), so that it has the
        # per-pair computation's bits and the hinges are zero exactly where they are there.
        values = mat[mask]
        mask_count = len(values)
        mean = torch.mean(values)
        hinge = torch.add(beta * mean, mat, alpha=sigma).clamp_min_(0)
        squares = hinge.square()
        kept = reduction.kept_within(squares, mask) if reduction.selects else mask
        kept_count = torch.count_nonzero(kept)
        kept_hinge = torch.where(kept, hinge, zero).flatten()
        # Rounded squares added up in float32 at least and rounded once, as a mean of the
        # listed squares is.
        acc = torch.float32 if mat.dtype in (torch.float16, torch.bfloat16) else mat.dtype
        total = torch.sum(torch.where(kept, squares, zero), dtype=acc)
        # Python numbers, as in the plain reduction: a float16 tensor cannot hold a large count.
        factor = 1 / max(int(kept_count), 1) if reduction.kind == "mean" else 1
        ctx.save_for_backward(mat, mask, kept_hinge)
        ctx.constants = (sigma, beta, reduction, mask_count, factor)
        ctx.mark_non_differentiable(kept_count)
        return (total * factor).to(mat.dtype), kept_count

    @staticmethod
    def backward(ctx, grad, _):
        mat, mask, kept_hinge = ctx.saved_tensors
        sigma, beta, reduction, mask_count, factor = ctx.constants
        if wants_graph_of_gradient():
            inputs = (mat, mask, sigma, beta, reduction)
            return *replayed_gradients(_plain_masked_squared_hinge, inputs, grad)[:2], None, None, None
        scale = grad * (2 * factor)
        through_mean = scale * (beta / mask_count) * kept_hinge.sum()
        grad_mat = kept_hinge.view_as(mat).mul(scale * sigma).add_(through_mean)
        zero = torch.zeros((), dtype=mat.dtype, device=mat.device)
        return torch.where(mask, grad_mat, zero), None, None, None, None


def masked_squared_hinge(mat, mask, sigma, beta, reduction):
    """A loss-dict entry: the reduced squared hinges (``already_reduced``), or the zero entry
    when the reducer keeps no cell."""
    loss, kept_count = MaskedSquaredHinge.apply(mat, mask, float(sigma), float(beta), reduction)
    return already_reduced(0 if int(kept_count) == 0 else loss)
