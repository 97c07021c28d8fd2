"""Sums over all (anchor, positive, negative) hinge terms without visiting each triplet.

Write every triplet's argument as ``v_ijk = t_ij + x_ik``: ``t_ij`` depends only on the anchor
``i`` and its ``j``-th positive, ``x_ik`` only on the anchor and the negative ``k``. A triplet
is kept when ``x_ik`` lies strictly between two bounds of its positive, ``lower_ij`` and
``upper_ij`` (``low - t_ij`` and ``high - t_ij`` in real arithmetic; the caller computes them
exactly as its rounded per-triplet test decides). An anchor has few positives, so each negative
can be placed among its anchor's sorted bounds with a handful of comparisons, and the
per-bucket counts and sums of ``x`` give, for every positive, how many negatives it keeps and
their sum. The kept sum, the kept count and the gradient coefficients then follow from
``O(N M P)`` comparisons on ``(N, M)`` matrices, instead of the ``N x P x M`` triplet tensor.
"""

import torch

# Up to this many positives per anchor, bounds are counted by one comparison pass each; above
# it, by a binary search per entry.
_MAX_COMPARISON_PASSES = 16


def _bounds_below(sorted_bounds, x, strictly):
    """``#(b < x)`` (or ``#(b <= x)``) per entry of ``x`` (N, M), over the row's sorted bounds."""
    width = sorted_bounds.shape[1]
    if width > _MAX_COMPARISON_PASSES:
        side = "left" if strictly else "right"
        return torch.searchsorted(sorted_bounds.contiguous(), x.contiguous(), side=side)
    compare = torch.lt if strictly else torch.le
    count = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for r in range(width):
        count.add_(compare(sorted_bounds[:, r : r + 1], x))
    return count.long()


def _kept_per_bucket(bucket, x, neg_mask, width):
    """Per anchor, for each rank ``r`` of its bounds: count and sum of the negatives above it."""
    bucket = torch.where(neg_mask, bucket, width + 1)  # non-negatives go to a discarded bucket
    counts = torch.zeros(x.shape[0], width + 2, dtype=x.dtype, device=x.device)
    counts.scatter_add_(1, bucket, neg_mask.to(x.dtype))
    sums = torch.zeros_like(counts).scatter_add_(1, bucket, torch.where(neg_mask, x, 0))
    # negatives in buckets r+1 .. width are above the r-th bound
    above = lambda per_bucket: per_bucket[:, 1 : width + 1].flip(1).cumsum(1).flip(1)  # noqa: E731
    return above(counts), above(sums)


def hinge_triplet_sums(t, lower, upper, pos_valid, x, neg_mask, x_values=None):
    """Kept sum, kept count and ``d(sum)/dt``, ``d(sum)/dx`` of ``v = t_ij + x_ik`` over all
    triplets of valid positives and negatives with ``lower_ij < x_ik < upper_ij``.

    Args:
        t: ``(N, P)`` positive terms (any value where ``pos_valid`` is False); the dtype of
            the sums.
        lower: ``(N, P)`` exclusive lower bound on ``x`` of each positive, in ``x``'s dtype.
        upper: ``(N, P)`` exclusive upper bound, or None. Bounds must rise together: a
            positive with a larger ``lower`` never has a smaller ``upper`` (both come from one
            monotone rule applied to each positive's term).
        pos_valid: ``(N, P)`` which entries are real positives.
        x: ``(N, M)`` negative terms, compared with the bounds; only ``neg_mask`` entries count.
        neg_mask: ``(N, M)`` negatives of each anchor.
        x_values: the values of ``x`` to add up (default ``x``), for example ``x`` in a wider
            dtype so that sums of many terms of both signs keep their precision.

    Returns ``(value, count, grad_t, grad_x)``: ``grad_t`` ``(N, P)`` counts the negatives each
    positive keeps, ``grad_x`` ``(N, M)`` the positives each negative is kept with.
    """
    width = t.shape[1]
    inf = torch.tensor(float("inf"), dtype=lower.dtype, device=lower.device)
    lower = torch.where(pos_valid, lower, inf)  # padding keeps nothing and sorts last
    # Sort by (lower, upper) so that both rise along each row (ties in lower, then upper).
    order = torch.arange(width, device=t.device).expand_as(t)
    if upper is not None:
        upper = torch.where(pos_valid, upper, inf)
        order = torch.sort(upper, dim=1, stable=True).indices
    order = order.gather(1, torch.sort(lower.gather(1, order), dim=1, stable=True).indices)
    lower_sorted = lower.gather(1, order)
    x_values = x if x_values is None else x_values
    below_lower = _bounds_below(lower_sorted, x, strictly=True)  # #(j: lower_j < x)
    count_r, sum_r = _kept_per_bucket(below_lower, x_values, neg_mask, width)
    per_negative = below_lower
    if upper is not None:
        reach_upper = _bounds_below(upper.gather(1, order), x, strictly=False)  # #(upper_j <= x)
        over_r, over_sum_r = _kept_per_bucket(reach_upper, x_values, neg_mask, width)
        count_r, sum_r = count_r - over_r, sum_r - over_sum_r
        per_negative = below_lower - reach_upper
    real = pos_valid.gather(1, order)
    t_sorted = torch.where(real, t.gather(1, order), 0)
    count_r = torch.where(real, count_r, 0)
    value = torch.sum(count_r.to(t.dtype) * t_sorted + torch.where(real, sum_r, 0).to(t.dtype))
    count = int(count_r.sum())
    grad_t = torch.zeros_like(count_r).scatter_(1, order, count_r)
    grad_x = torch.where(neg_mask, per_negative, 0)
    return value, count, grad_t, grad_x
