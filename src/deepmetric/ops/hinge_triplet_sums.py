"""Sums over all (anchor, positive, negative) triplet hinges without visiting each triplet.

The triplet margin loss of ``(a, p, n)`` is ``[v]_+`` with

    v = (s * (d_ap - d_an)) + margin            (s = +1 for a distance, -1 for a similarity)

computed exactly so, in the matrix's dtype, by the listed (reference) formula. Write
``x = -s * d_an`` and ``c = s * d_ap``: then ``v = h(x) = fl(fl(c + x) + margin)``, which never
decreases as ``x`` grows. So for each positive pair the triplets with ``low < v < high`` are the
negatives with ``theta < x < phi`` for two thresholds found *exactly* in floating point
(``ops.float_search``: a bisection over the representable values near the real-arithmetic
bound), so the kept set is the one the listed formula keeps, bit for bit, even for hinges of 1e-8.

An anchor has few positives, so each negative is placed among its anchor's sorted thresholds with
a handful of comparisons, and per-bucket counts and sums of ``x`` give, for every positive, how
many negatives it keeps and their sum. The kept sum, the kept count and the gradient then follow
from ``O(N M P)`` comparisons on ``(N, M)`` matrices instead of the ``N x P x M`` triplets:

    sum = sum_(a,p) count_ap * (c_ap + margin) + sum of x over the kept negatives
    d sum / d d_ap = s * count_ap        d sum / d d_an = -s * (number of positives keeping n)
"""

import torch

from .dtypes import accumulation_dtype
from .float_search import float_to_key, key_to_float, smallest_true
from .masks import count_per_row

# Up to this many positives per anchor, thresholds are counted by one comparison pass each;
# above it, by a binary search per entry.
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


def _above_bounds(bounds, x, neg_mask, strictly):
    """For bounds ``(N, P)`` (``+inf`` for padding) and values ``x`` ``(N, M)`` under ``neg_mask``:
    per bound, the count and the sum of the negatives above it (``x > b``, or ``x >= b`` when not
    ``strictly``), and per negative the number of bounds below it."""
    width = bounds.shape[1]
    sorted_bounds, order = torch.sort(bounds, dim=1)
    below = _bounds_below(sorted_bounds, x, strictly)
    bucket = torch.where(neg_mask, below, width + 1)  # non-negatives go to a discarded bucket
    counts = torch.zeros(x.shape[0], width + 2, dtype=x.dtype, device=x.device)
    counts.scatter_add_(1, bucket, neg_mask.to(x.dtype))
    sums = torch.zeros_like(counts).scatter_add_(1, bucket, torch.where(neg_mask, x, 0))
    # the negatives in buckets r+1 .. width lie above the r-th smallest bound
    above = lambda per_bucket: per_bucket[:, 1 : width + 1].flip(1).cumsum(1).flip(1)  # noqa: E731
    count_r, sum_r = above(counts), above(sums)
    per_bound = lambda r: torch.zeros_like(r).scatter_(1, order, r)  # noqa: E731
    return per_bound(count_r), per_bound(sum_r), torch.where(neg_mask, below, 0)


def _positives_packed(pos_mask):
    """``(pos_idx, pos_valid)``: each anchor's positive columns packed to the left."""
    pos_count = count_per_row(pos_mask)
    width = max(int(pos_count.max()), 1)
    pos_idx = torch.argsort((~pos_mask).to(torch.int8), dim=1, stable=True)[:, :width]
    pos_valid = torch.arange(width, device=pos_mask.device).unsqueeze(0) < pos_count.unsqueeze(1)
    return pos_idx, pos_valid


def _kept_triplets(mat, pos_mask, neg_mask, sign, margin, low, high):
    """``(sum, count, d sum / d mat)`` of the hinges ``v`` with ``low < v < high`` (``low >= 0``
    or None for every triplet's ``[v]_+``... see :func:`hinge_triplet_sums`)."""
    dtype = mat.dtype
    acc = accumulation_dtype(dtype)
    pos_idx, pos_valid = _positives_packed(pos_mask)
    c = sign * mat.gather(1, pos_idx)  # exact: a negation at most

    def h(x):
        return (c + x) + margin

    inf = torch.tensor(torch.inf, dtype=acc, device=mat.device)
    # a few roundings of numbers of this size: brackets the exact bound unless it is near zero
    slack = 16 * torch.finfo(dtype).eps * (c.abs() + abs(margin) + abs(low) + 1)
    # x > theta keeps v > low (theta: the float just below the first x that keeps it)
    first_kept = smallest_true(lambda x: h(x) > low, low - margin - c, slack)
    theta = key_to_float(float_to_key(first_kept) - 1, dtype).to(acc)
    theta = torch.where(pos_valid, theta, inf)  # padded positives keep nothing
    x = (-sign * mat).to(acc)
    count_p, sum_p, per_negative = _above_bounds(theta, x, neg_mask, strictly=True)
    if high is not None:
        # x >= phi drops v >= high; never below theta's successor (then nothing is kept, and no
        # count goes negative)
        phi = smallest_true(lambda x: ~(h(x) < high), high - margin - c, slack).to(acc)
        phi = torch.maximum(phi, torch.nextafter(theta, inf))
        phi = torch.where(pos_valid, phi, inf)
        over_p, over_sum_p, over_negative = _above_bounds(phi, x, neg_mask, strictly=False)
        count_p, sum_p, per_negative = count_p - over_p, sum_p - over_sum_p, per_negative - over_negative
    t = torch.where(pos_valid, c.to(acc) + margin, 0)
    total = torch.sum(count_p * t + sum_p)
    count = int(count_p.sum())
    coef = (-sign * per_negative).to(dtype)
    coef.scatter_add_(1, pos_idx, (sign * count_p).to(dtype))
    return total, count, coef


class _HingeTripletSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mat, pos_mask, neg_mask, sign, margin, low, high):
        total, count, coef = _kept_triplets(mat.detach(), pos_mask, neg_mask, sign, margin, low, high)
        ctx.save_for_backward(coef)
        count = torch.tensor(count)
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx, grad, _):
        (coef,) = ctx.saved_tensors
        return grad.to(coef.dtype) * coef, None, None, None, None, None, None


def hinge_triplet_sums(mat, pos_mask, neg_mask, sign, margin, low=0.0, high=None):
    """``(sum, count)`` over the triplets (``pos_mask[a, p]`` and ``neg_mask[a, n]``) whose
    ``v = s * (mat[a, p] - mat[a, n]) + margin`` satisfies ``low < v < high`` (``high`` may be
    None; ``low`` must be >= 0, so every kept ``v`` is its own hinge ``[v]_+``).

    The sum is in the accumulation dtype and carries the gradient with respect to ``mat``; the
    count is an int. Every anchor needs at least one positive column in ``pos_mask`` or none.
    """
    if low is None or low < 0:
        raise ValueError(f"hinge_triplet_sums needs low >= 0, got {low}")
    low, sign, margin = float(low), float(sign), float(margin)
    total, count = _HingeTripletSum.apply(mat, pos_mask, neg_mask, sign, margin, low, high)
    return total, int(count)
