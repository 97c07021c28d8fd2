"""The cosine-similarity matrix of two sets of rows as one autograd node.

``normalize(q) @ normalize(r).T`` built from ``torch.nn.functional.normalize`` records a chain
of about a dozen autograd nodes (norm, clamp, expand, divide, product, for each side). At the
batch sizes of metric learning their per-node overhead and extra passes over memory cost as much
as the product itself. This node computes the same values and gradients with one forward and one
backward pass per side.
"""

import torch

from ..utils.fused_backward import replay_inputs, replayed_gradients, wants_graph_of_gradient

# Norms below this are clamped, exactly as torch.nn.functional.normalize does by default.
NORM_EPS = 1e-12


def unit_rows(x):
    """``(x / max(||x_i||, eps), max(||x_i||, eps))`` row-wise (for use inside autograd nodes)."""
    # A division, not a multiply by the reciprocal: the values equal F.normalize's bit for bit.
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(NORM_EPS)
    return x / norm, norm


def unit_rows_backward(grad_unit, unit, norm):
    """The gradient with respect to ``x`` of ``unit_rows(x)[0]``, given ``grad_unit``: remove the
    radial part, divide by the norm. A row whose norm was clamped has a constant divisor, so
    nothing is removed from it."""
    radial = torch.linalg.vecdot(grad_unit, unit, dim=1).unsqueeze(1)
    radial = torch.where(norm > NORM_EPS, radial, 0)
    return torch.addcmul(grad_unit, unit, radial, value=-1).div_(norm)


def plain_cosine_matrix(query, ref):
    """The same matrix from plain torch operations (what second derivatives are taken of)."""
    normalize = torch.nn.functional.normalize
    return normalize(query, dim=1) @ normalize(ref, dim=1).T


def plain_squared_distance_matrix(query, ref):
    """``||q/|q| - r/|r| ||^2`` as ``2 - 2 cos`` (what second derivatives are taken of: cdist
    has none)."""
    return 2 - 2 * plain_cosine_matrix(query, ref)


def _save_unit_rows(ctx, query, ref):
    """Unit rows of both sides, saved (with what a replay needs) for the backward pass."""
    query_unit, query_norm = unit_rows(query)
    if ref is query:
        ref_unit, ref_norm = query_unit, query_norm
    else:
        ref_unit, ref_norm = unit_rows(ref)
    # For a replay (second derivatives) the inputs that need gradients are kept as they are;
    # the others only as unit rows, which leaves a buffer updated in place after this call
    # (a CrossBatchMemory queue) free to change.
    ctx.save_for_backward(
        query_unit, query_norm, ref_unit, ref_norm, *replay_inputs((query, query_unit), (ref, ref_unit))
    )
    return query_unit, ref_unit


def _backward_through_cosines(ctx, grad_cosines):
    """Gradients with respect to ``query`` and ``ref``, given those with respect to the cosines."""
    query_unit, query_norm, ref_unit, ref_norm, _, _ = ctx.saved_tensors
    grad_query = grad_ref = None
    if ctx.needs_input_grad[0]:
        grad_query = unit_rows_backward(grad_cosines @ ref_unit, query_unit, query_norm)
    if ctx.needs_input_grad[1]:
        grad_ref = unit_rows_backward(grad_cosines.T @ query_unit, ref_unit, ref_norm)
    return grad_query, grad_ref


def _replayed(ctx, grad, plain_formula):
    query, ref = ctx.saved_tensors[4:]
    return replayed_gradients(plain_formula, (query, ref), grad)


class CosineMatrix(torch.autograd.Function):
    """``(N, M)`` cosines between the rows of ``query`` ``(N, D)`` and ``ref`` ``(M, D)``."""

    @staticmethod
    def forward(ctx, query, ref):
        query_unit, ref_unit = _save_unit_rows(ctx, query, ref)
        return query_unit @ ref_unit.T

    @staticmethod
    def backward(ctx, grad):
        if wants_graph_of_gradient():
            return _replayed(ctx, grad, plain_cosine_matrix)
        return _backward_through_cosines(ctx, grad)


class SquaredDistanceMatrix(torch.autograd.Function):
    """``(N, M)`` squared Euclidean distances between the unit rows of ``query`` and ``ref``.

    The values are computed as ``LpDistance(power=2)`` computes them (``cdist`` of the unit
    rows, squared), bit for bit, so that losses comparing them with a margin decide exactly
    the same; the gradient is that of the same function written ``2 - 2 cos``, in closed form.
    """

    @staticmethod
    def forward(ctx, query, ref):
        query_unit, ref_unit = _save_unit_rows(ctx, query, ref)
        return torch.cdist(query_unit, ref_unit) ** 2

    @staticmethod
    def backward(ctx, grad):
        if wants_graph_of_gradient():
            return _replayed(ctx, grad, plain_squared_distance_matrix)
        return _backward_through_cosines(ctx, grad * -2)


def cosine_matrix(query, ref=None):
    """Cosines between the rows of ``query`` and of ``ref`` (``query`` itself when ``None``)."""
    return CosineMatrix.apply(query, query if ref is None else ref)


def squared_distance_matrix(query, ref=None):
    """Squared Euclidean distances between the unit rows of ``query`` and of ``ref``."""
    return SquaredDistanceMatrix.apply(query, query if ref is None else ref)
