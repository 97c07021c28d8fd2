"""Sums over all (anchor, positive, negative) hinge terms without visiting each triplet.

Write every triplet's argument as ``v_ijk = t_ij + x_ik``: ``t_ij`` depends only on the anchor
``i`` and its ``j``-th positive, ``x_ik`` only on the anchor and the negative ``k``. A triplet
is kept when ``low < v < high``, that is when ``x_ik`` lies strictly between the bounds
``low - t_ij`` and ``high - t_ij``. An anchor has few positives, so each negative can be placed
among its anchor's sorted bounds with a handful of comparisons, and the per-bucket counts and
sums of ``x`` give, for every positive, how many negatives it keeps and their sum. The kept
sum, the kept count and the gradient coefficients then follow from ``O(N M P)`` comparisons on
``(N, M)`` matrices, instead of the ``N x P x M`` triplet tensor.
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


def hinge_triplet_sums(t, pos_cols, pos_valid, x, neg_mask, low, high):
    """Kept sum, kept count and ``d(sum)/dt``, ``d(sum)/dx`` of ``v = t_ij + x_ik`` over all
    triplets of valid positives and negatives with ``low < v < high`` (``high`` may be None).

    Args:
        t: ``(N, P)`` positive terms (padding where ``pos_valid`` is False).
        pos_cols: ``(N, P)`` column of each positive (used only to return ``d/dt`` per column).
        pos_valid: ``(N, P)`` which entries of ``t`` are real positives.
        x: ``(N, M)`` negative terms; only entries with ``neg_mask`` count.
        neg_mask: ``(N, M)`` negatives of each anchor.
        low: lower bound (exclusive) of a kept ``v``; a float.
        high: upper bound (exclusive) or None.

    Returns ``(value, count, grad_t, grad_x)``: ``grad_t`` ``(N, P)`` counts the negatives each
    positive keeps, ``grad_x`` ``(N, M)`` the positives each negative is kept with.
    """
    width = t.shape[1]
    # Padded positives get t = -inf: their bounds are +inf, below every x.
    t = torch.where(pos_valid, t, -torch.inf)
    lower_sorted, order = torch.sort(low - t, dim=1)
    below_lower = _bounds_below(lower_sorted, x, strictly=True)  # #(j: low - t_j < x)
    count_r, sum_r = _kept_per_bucket(below_lower, x, neg_mask, width)
    per_negative = below_lower
    if high is not None:
        # (high - t) sorts in the same order as (low - t): both are -t shifted.
        upper_sorted = (high - t).gather(1, order)
        reach_upper = _bounds_below(upper_sorted, x, strictly=False)  # #(j: high - t_j <= x)
        over_r, over_sum_r = _kept_per_bucket(reach_upper, x, neg_mask, width)
        count_r, sum_r = count_r - over_r, sum_r - over_sum_r
        per_negative = below_lower - reach_upper
    real = torch.isfinite(lower_sorted)
    t_sorted = torch.where(real, t.gather(1, order), 0)
    count_r = torch.where(real, count_r, 0)
    value = torch.sum(count_r * t_sorted + torch.where(real, sum_r, 0))
    count = int(count_r.sum())
    grad_t = torch.zeros_like(t).scatter_(1, order, count_r)
    grad_x = torch.where(neg_mask, per_negative, 0).to(x.dtype)
    return value, count, grad_t, grad_x
