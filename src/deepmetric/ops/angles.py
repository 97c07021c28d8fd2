"""Angles from cosines with a gradient that stays finite at +-1."""

import torch

# acos has an infinite slope at +-1. The gradient is that of acos on [-1 + m, 1 - m] and 0
# outside it (as through a clamp to that interval), so it stays finite when c reaches +-1.
_ACOS_GRAD_MARGIN = 1e-7


def _acos_slope(cosine):
    inside = (cosine >= -1 + _ACOS_GRAD_MARGIN) & (cosine <= 1 - _ACOS_GRAD_MARGIN)
    safe = torch.where(inside, cosine, torch.zeros((), dtype=cosine.dtype, device=cosine.device))
    return torch.where(inside, -torch.rsqrt(1 - safe * safe), 0)


class _SafeAcos(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cosine):
        ctx.save_for_backward(cosine)
        return torch.acos(cosine.clamp(-1, 1))

    @staticmethod
    def backward(ctx, grad):
        (cosine,) = ctx.saved_tensors
        # plain torch operations: differentiable again when a graph of the gradient is recorded
        return grad * _acos_slope(cosine)


def safe_acos(cosine):
    """``acos(clamp(cosine, -1, 1))``; its gradient is ``-1 / sqrt(1 - c^2)`` for
    ``c`` in ``[-1 + 1e-7, 1 - 1e-7]`` and 0 outside (finite everywhere)."""
    return _SafeAcos.apply(cosine)
