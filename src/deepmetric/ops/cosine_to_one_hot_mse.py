"""Mean squared error between cosines to class columns and one-hot targets, as one node
(P2SGradLoss):

    loss = mean_{i,j} (clamp(x_i . weight_j / ||x_i||, -1, 1) - [j == y_i])^2

The normalisation, product, clamp and squared error share one closed-form backward pass.
"""

import torch

from .fused_backward import replayed_gradients, wants_graph_of_gradient
from .unit_rows import unit_rows, unit_rows_backward


def _plain_cosine_to_one_hot_mse(x, weight, labels):
    """``_CosineToOneHotMSE`` from plain torch operations (what second derivatives are taken of)."""
    cos = (torch.nn.functional.normalize(x, dim=1) @ weight).clamp(-1, 1)
    one_hot = torch.nn.functional.one_hot(labels, cos.shape[1]).to(cos.dtype)
    return torch.nn.functional.mse_loss(cos, one_hot)


class _CosineToOneHotMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, labels):
        x_unit, x_norm = unit_rows(x)
        cos = x_unit @ weight
        error = cos.clamp(-1, 1)
        # The clamp passes gradients only where -1 <= cos <= 1 (both ends included, as in torch).
        unclamped = error == cos
        error[torch.arange(len(labels), device=labels.device), labels] -= 1
        ctx.save_for_backward(x_unit, x_norm, weight, unclamped, error, x, labels)
        return torch.linalg.vector_norm(error).square() / error.numel()

    @staticmethod
    def backward(ctx, grad):
        x_unit, x_norm, weight, unclamped, error, x, labels = ctx.saved_tensors
        if wants_graph_of_gradient():
            return replayed_gradients(_plain_cosine_to_one_hot_mse, (x, weight, labels), grad)
        grad_cos = torch.where(unclamped, error, 0).mul_(grad * 2 / error.numel())
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = unit_rows_backward(grad_cos @ weight.T, x_unit, x_norm)
        if ctx.needs_input_grad[1]:
            grad_weight = x_unit.T @ grad_cos
        return grad_x, grad_weight, None


def cosine_to_one_hot_mse(x, weight, labels):
    """The loss of the module docstring for ``x`` ``(N, D)``, ``weight`` ``(D, C)`` and integer
    ``labels`` ``(N,)``."""
    return _CosineToOneHotMSE.apply(x, weight, labels)
