"""Softmax cross-entropy over scaled cosines to class vectors, as one autograd node.

Normalised-softmax and proxy-NCA losses are ``CE(scale * cos(x_i, W_c), y_i)``. Built from
separate torch operations this records normalisations, a product, a scale, a log-softmax and a
gather, each with its own backward node and pass over the ``(N, C)`` logits. The node below
does the same arithmetic with one pass per step and a closed-form backward
(``softmax - onehot``), which is what makes these losses faster than the reference.
"""

import torch

from ..distances.cosine_matrix import plain_cosine_matrix, unit_rows, unit_rows_backward
from ..utils.fused_backward import replay_inputs, replayed_gradients, wants_graph_of_gradient

# Largest |scale| for which a constant shift keeps exp(scale * cos - |scale|) clear of underflow
# in float32 (exp(-2 * 40) ~ 1.8e-35 > 1.2e-38); larger scales shift by each row's maximum.
MAX_CONSTANT_SHIFT = 40.0


def _plain_cosine_cross_entropy(x, weight, labels, scale):
    logits = scale * plain_cosine_matrix(x, weight)
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


class CosineCrossEntropy(torch.autograd.Function):
    """Per-row ``logsumexp_c(scale * cos_ic) - scale * cos_{i, y_i}`` for ``x`` ``(N, D)``,
    class vectors ``weight`` ``(C, D)`` (rows, any norm) and integer ``labels`` ``(N,)``."""

    @staticmethod
    def forward(ctx, x, weight, labels, scale):
        x_unit, x_norm = unit_rows(x)
        weight_unit, weight_norm = (x_unit, x_norm) if weight is x else unit_rows(weight)
        if abs(scale) <= MAX_CONSTANT_SHIFT:
            # |logit| <= |scale|, so exp(logit - |scale|) can neither overflow nor underflow to 0
            # for a whole row: the shift comes free inside the product.
            shift = torch.full((len(x), 1), abs(scale), dtype=x.dtype, device=x.device)
            shifted = torch.addmm(shift, x_unit, weight_unit.T, alpha=scale, beta=-1)
        else:
            # beta=0: the (scalar) input is ignored, and the scale is applied inside the product.
            shifted = torch.addmm(x.new_zeros(()), x_unit, weight_unit.T, beta=0, alpha=scale)
            shift = shifted.amax(dim=1, keepdim=True)
            shifted.sub_(shift)
        labels_column = labels.unsqueeze(1)
        target = shifted.gather(1, labels_column).squeeze(1)
        # exp(logit - shift) is kept: the backward pass needs the softmax, not a second exp.
        shifted_exp = shifted.exp_()
        exp_sum = shifted_exp.sum(dim=1)
        losses = torch.log(exp_sum) - target
        replay = replay_inputs((x, x_unit), (weight, weight_unit))
        ctx.save_for_backward(x_unit, x_norm, weight_unit, weight_norm, shifted_exp, exp_sum, labels, *replay)
        ctx.scale = scale
        return losses

    @staticmethod
    def backward(ctx, grad):
        x_unit, x_norm, weight_unit, weight_norm, shifted_exp, exp_sum, labels, x, weight = ctx.saved_tensors
        if wants_graph_of_gradient():
            return replayed_gradients(_plain_cosine_cross_entropy, (x, weight, labels, ctx.scale), grad)
        # d loss_i / d logit_ic = softmax_ic - [c == y_i], and logit = scale * cos: the scale is
        # folded into this (N, C) factor so that neither product needs it.
        scaled_grad = grad * ctx.scale
        grad_logits = shifted_exp * (scaled_grad / exp_sum).unsqueeze(1)
        grad_logits.scatter_add_(1, labels.unsqueeze(1), -scaled_grad.unsqueeze(1))
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = unit_rows_backward(grad_logits @ weight_unit, x_unit, x_norm)
        if ctx.needs_input_grad[1]:
            grad_weight = unit_rows_backward(grad_logits.T @ x_unit, weight_unit, weight_norm)
        return grad_x, grad_weight, None, None


def cosine_cross_entropy(x, weight, labels, scale):
    """``CE(scale * cos(x, weight), labels)`` per row; ``weight`` holds one class vector per row."""
    return CosineCrossEntropy.apply(x, weight, labels.long(), float(scale))
