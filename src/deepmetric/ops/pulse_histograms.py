"""Per-row soft histograms with triangular pulses, restricted to boolean masks (FastAPLoss).

    out[k][i, l] = sum_j masks[k][i, j] * [1 - |dist_ij - centres_l| / delta]_+

Each distance falls between two neighbouring centres, so only two pulses are non-zero. Rows are
processed in blocks and the backward pass recomputes the pulse weights, so the memory held
between the passes is ``dist`` itself:

    d/d dist [1 - |dist - c| / delta]_+ = -sign(dist - c) / delta inside the pulse, 0 outside
"""

import torch

# Rows of the distance matrix handled at once; bounds the temporaries to a few of this size.
_BLOCK_ELEMENTS = 1 << 22


def _pulse_weights(dist, centres, delta):
    """The two centres around each distance and the pulse heights there (the others are 0)."""
    with torch.no_grad():
        lower = torch.floor(dist / delta).clamp_(0, len(centres) - 2).long()
    c_lo, c_hi = centres[lower], centres[lower + 1]
    # Same expression as the triangular pulse [1 - |d - c| / delta]+, so values agree bitwise.
    w_lo = torch.relu(1 - torch.abs(dist - c_lo) / delta)
    w_hi = torch.relu(1 - torch.abs(dist - c_hi) / delta)
    return lower, c_lo, c_hi, w_lo, w_hi


def _row_blocks(num_rows, num_cols):
    step = max(1, _BLOCK_ELEMENTS // max(1, num_cols))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))


class _PulseHistograms(torch.autograd.Function):

    @staticmethod
    def forward(ctx, dist, masks, centres, delta):
        num_rows, num_cols = dist.shape
        hists = [dist.new_zeros(num_rows, len(centres)) for _ in masks]
        zero = dist.new_zeros(())
        for rows in _row_blocks(num_rows, num_cols):
            lower, _, _, w_lo, w_hi = _pulse_weights(dist[rows], centres, delta)
            for hist, mask in zip(hists, masks):
                hist[rows].scatter_add_(1, lower, torch.where(mask[rows], w_lo, zero))
                hist[rows].scatter_add_(1, lower + 1, torch.where(mask[rows], w_hi, zero))
        ctx.save_for_backward(dist, centres)
        ctx.masks, ctx.delta = masks, delta
        return tuple(hists)

    @staticmethod
    def backward(ctx, *grad_hists):
        dist, centres = ctx.saved_tensors
        delta = ctx.delta
        grad = torch.zeros_like(dist)
        zero = dist.new_zeros(())
        for rows in _row_blocks(*dist.shape):
            lower, c_lo, c_hi, w_lo, w_hi = _pulse_weights(dist[rows], centres, delta)
            # d/dd [1 - |d - c| / delta]+ = -sign(d - c) / delta inside the pulse, 0 outside.
            slope_lo = torch.where(w_lo > 0, -torch.sign(dist[rows] - c_lo) / delta, zero)
            slope_hi = torch.where(w_hi > 0, -torch.sign(dist[rows] - c_hi) / delta, zero)
            for grad_hist, mask in zip(grad_hists, ctx.masks):
                if grad_hist is None:
                    continue
                g = grad_hist[rows]
                pair_grad = g.gather(1, lower) * slope_lo + g.gather(1, lower + 1) * slope_hi
                grad[rows] += torch.where(mask[rows], pair_grad, zero)
        return grad, None, None, None


def pulse_histograms(dist, masks, centres, delta):
    """One ``(N, len(centres))`` histogram per mask in ``masks`` (module docstring)."""
    return _PulseHistograms.apply(dist, masks, centres, delta)
