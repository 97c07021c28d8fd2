"""Smoothed rank counts shared by the ranking losses (SmoothAPLoss, PNPLoss).

A smoothed rank of item ``i`` in query ``q``'s ranking counts the items ranked above it with a
sigmoid of the similarity difference instead of a step:

    out[c, q, k] = sum_j masks[c][q, j] * sigmoid((S[q, j] - S[q, pivots[q, k]]) / temperature)

The full tensor of differences has ``N x K x M`` entries (cubic in the batch size when every
element is a pivot), so queries are processed in blocks and the backward pass recomputes each
block instead of storing it: memory stays a few blocks, independent of ``N``.
"""

import torch

# Entries of one (queries x pivots x references) block; three such temporaries are alive at once.
_BLOCK_ELEMENTS = 1 << 22


def sigmoid_rank_sums(sims, pivots, masks, temperature, clamp=None):
    """``(len(masks), N, K)`` smoothed counts (see the module docstring).

    Args:
        sims: ``(N, M)`` similarities, row ``q`` is query ``q``'s scores of the references.
        pivots: ``(N, K)`` long column indices, the items whose rank is counted.
        masks: sequence of ``(N, M)`` bool tensors (or ``None`` for "every reference") selecting
            the references that are counted.
        temperature: the sigmoid's temperature.
        clamp: if given, the sigmoid argument is clamped to ``[-clamp, clamp]`` (gradient 0
            outside), as PNPLoss does for stability.
    """
    return _SigmoidRankSums.apply(sims, pivots, tuple(masks), temperature, clamp)


def _query_blocks(num_queries, per_query):
    step = max(1, _BLOCK_ELEMENTS // max(1, per_query))
    for start in range(0, num_queries, step):
        yield slice(start, min(start + step, num_queries))


def _scaled_differences(sims, pivots, temperature):
    """``z[q, k, j] = (S[q, j] - S[q, pivots[q, k]]) / temperature``."""
    pivot_sims = sims.gather(1, pivots)
    return (sims.unsqueeze(1) - pivot_sims.unsqueeze(2)) / temperature


class _SigmoidRankSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sims, pivots, masks, temperature, clamp):
        num_queries, num_refs = sims.shape
        out = sims.new_zeros(len(masks), num_queries, pivots.shape[1])
        for rows in _query_blocks(num_queries, pivots.shape[1] * num_refs):
            z = _scaled_differences(sims[rows], pivots[rows], temperature)
            if clamp is not None:
                z = z.clamp_(-clamp, clamp)
            sig = torch.sigmoid_(z)
            for c, mask in enumerate(masks):
                if mask is None:
                    out[c, rows] = sig.sum(dim=2)
                else:
                    out[c, rows] = torch.bmm(sig, mask[rows].to(sig.dtype).unsqueeze(2)).squeeze(2)
        ctx.save_for_backward(sims, pivots)
        ctx.masks, ctx.temperature, ctx.clamp = masks, temperature, clamp
        return out

    @staticmethod
    def backward(ctx, grad_out):
        sims, pivots = ctx.saved_tensors
        temperature, clamp = ctx.temperature, ctx.clamp
        grad = torch.zeros_like(sims)
        for rows in _query_blocks(sims.shape[0], pivots.shape[1] * sims.shape[1]):
            z = _scaled_differences(sims[rows], pivots[rows], temperature)
            sig = torch.sigmoid(z.clamp(-clamp, clamp) if clamp is not None else z)
            # d sigmoid(z) / d S = sigmoid (1 - sigmoid) / T, zero where the argument was clamped
            slope = sig.mul_(1 - sig).div_(temperature)
            if clamp is not None:
                slope.masked_fill_(z.abs() > clamp, 0)
            del z
            grad_rows = torch.zeros_like(grad[rows])
            grad_pivots = sims.new_zeros(grad_rows.shape[0], pivots.shape[1])
            for c, mask in enumerate(ctx.masks):
                g = grad_out[c, rows]
                # the reference side of each difference: +slope, summed over the pivots
                by_ref = torch.bmm(g.unsqueeze(1), slope).squeeze(1)
                if mask is None:
                    grad_rows += by_ref
                    grad_pivots -= g * slope.sum(dim=2)
                else:
                    weights = mask[rows].to(sims.dtype)
                    grad_rows += by_ref * weights
                    grad_pivots -= g * torch.bmm(slope, weights.unsqueeze(2)).squeeze(2)
            grad[rows] = grad_rows.scatter_add_(1, pivots[rows], grad_pivots)
        return grad, None, None, None, None
