"""Squared Euclidean distances between two sets of rows as one autograd node.

    mat[i, j] = ||q_i - r_j||^2

The values are ``cdist(q, r) ** 2``, computed exactly as ``LpDistance(power=2)`` computes them
(bit for bit, so that losses comparing them with a margin decide the same), and the gradient is
that of the square in closed form,

    d/dq_i = 2 (sum_j G_ij q_i - sum_j G_ij r_j)        d/dr_j = 2 (sum_i G_ij r_j - sum_i G_ij q_i)

instead of backward passes through ``cdist``'s square root and the square (which is also finite
at a zero distance, where the square root's slope is not).
"""

import torch

from .dtypes import accumulation_dtype
from .fused_backward import replayed_gradients, wants_graph_of_gradient


def euclidean(query, ref):
    """``cdist(query, ref)``; half precision is computed in float32 and rounded back (cdist has no
    half-precision kernels everywhere)."""
    work = accumulation_dtype(query.dtype)
    return torch.cdist(query.to(work), ref.to(work)).to(query.dtype)


def _plain_squared_euclidean(query, ref):
    """The same function written with products (what second derivatives are taken of)."""
    query_sq = (query * query).sum(dim=1, keepdim=True)
    ref_sq = (ref * ref).sum(dim=1, keepdim=True)
    return query_sq + ref_sq.T - 2 * query @ ref.T


class _SquaredEuclidean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, ref):
        ctx.save_for_backward(query, ref)
        return euclidean(query, ref) ** 2

    @staticmethod
    def backward(ctx, grad):
        query, ref = ctx.saved_tensors
        if wants_graph_of_gradient():
            return replayed_gradients(_plain_squared_euclidean, (query, ref), grad)
        grad_query = grad_ref = None
        if ctx.needs_input_grad[0]:
            grad_query = 2 * (grad.sum(dim=1, keepdim=True) * query - grad @ ref)
        if ctx.needs_input_grad[1]:
            grad_ref = 2 * (grad.sum(dim=0).unsqueeze(1) * ref - grad.T @ query)
        return grad_query, grad_ref


def squared_euclidean(query, ref):
    """``(N, M)`` squared distances between the rows of ``query`` ``(N, D)`` and ``ref`` ``(M, D)``
    (the module docstring)."""
    return _SquaredEuclidean.apply(query, ref)
