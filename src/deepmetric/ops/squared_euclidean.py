"""Squared Euclidean distances between two sets of rows, from one matrix product."""

import torch


def squared_euclidean(query, ref):
    """``(N, M)`` matrix of ``||q_i - r_j||^2 = ||q_i||^2 + ||r_j||^2 - 2 q_i . r_j``, clamped at
    0 (rounding can make the difference of nearly equal rows slightly negative).

    Unlike ``cdist(q, r) ** 2`` this takes no square root, so the gradient at a zero distance is
    the finite ``2 (q_i - r_j)``."""
    query_sq = torch.linalg.vecdot(query, query).unsqueeze(1)
    ref_sq = query_sq.T if ref is query else torch.linalg.vecdot(ref, ref).unsqueeze(0)
    return torch.addmm(query_sq + ref_sq, query, ref.T, alpha=-2).clamp_min_(0)
