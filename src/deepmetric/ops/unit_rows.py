"""Row-wise L2 normalisation as one autograd node.

    unit(x)_i = x_i / max(||x_i||, eps)

``torch.nn.functional.normalize`` records a chain of nodes (norm, clamp, expand, divide), each
with its own pass over memory in the backward pass. At the batch sizes of metric learning their
overhead costs as much as the product that follows, so this node computes the same values (bit
for bit) and takes the gradient in closed form:

    d/dx_i = (g_i - (g_i . unit_i) unit_i) / max(||x_i||, eps)

(a row whose norm was clamped has a constant divisor: nothing radial is removed from it).
"""

import torch

from .fused_backward import replayed_gradients, wants_graph_of_gradient

# Norms below this are clamped, exactly as torch.nn.functional.normalize does by default.
NORM_EPS = 1e-12


def unit_rows(x):
    """``(x / max(||x_i||, eps), max(||x_i||, eps))`` row-wise (for use inside autograd nodes)."""
    # A division, not a multiply by the reciprocal: the values equal F.normalize's bit for bit.
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(NORM_EPS)
    return x / norm, norm


def unit_rows_backward(grad_unit, unit, norm):
    """The gradient with respect to ``x`` of ``unit_rows(x)[0]``, given ``grad_unit``: remove the
    radial part, divide by the norm."""
    radial = torch.linalg.vecdot(grad_unit, unit, dim=1).unsqueeze(1)
    radial = torch.where(norm > NORM_EPS, radial, 0)
    return torch.addcmul(grad_unit, unit, radial, value=-1).div_(norm)


def _plain_l2_normalize_rows(x):
    return torch.nn.functional.normalize(x, p=2, dim=1)


class _L2NormalizeRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        unit, norm = unit_rows(x)
        # The input itself is kept only for a replay (second derivatives) and only when it needs
        # a gradient; a buffer updated in place after this call (a memory queue) stays free to change.
        ctx.save_for_backward(unit, norm, x if x.requires_grad else unit)
        return unit

    @staticmethod
    def backward(ctx, grad):
        unit, norm, x = ctx.saved_tensors
        if wants_graph_of_gradient():
            return replayed_gradients(_plain_l2_normalize_rows, (x,), grad)
        return unit_rows_backward(grad, unit, norm)


def l2_normalize_rows(x):
    """Rows of the 2-D ``x`` scaled to unit L2 norm (``F.normalize(x, dim=1)``, one node)."""
    return _L2NormalizeRows.apply(x)
