"""Per-row soft histograms with triangular pulses, restricted to boolean masks (FastAPLoss).

    out[k][i, l] = sum_j masks[k][i, j] * [1 - |dist_ij - centres_l| / delta]_+

In exact arithmetic only the two centres around a distance have a non-zero pulse; a distance
within rounding of a centre also has a pulse of a few ulps on the centre beyond its neighbour,
which the per-centre formula keeps, so four centres are visited. Rows are processed in blocks
and the backward pass recomputes the pulse weights, so the memory held between the passes is
``dist`` itself:

    d/d dist [1 - |dist - c| / delta]_+ = -sign(dist - c) / delta inside the pulse, 0 outside
"""

import torch

# Rows of the distance matrix handled at once; bounds the temporaries to a few of this size.
_BLOCK_ELEMENTS = 1 << 22
# Offsets, from the centre just below each distance, of the centres whose pulse can be non-zero:
# two in exact arithmetic, but a distance within rounding of a centre also gives a pulse of a
# few ulps (and a full slope) on the centre beyond its neighbour, as the per-centre formula does.
_NEAR_CENTRES = (-1, 0, 1, 2)


def _pulse_weights(dist, centres, delta):
    """``[(centre index, pulse height, pulse slope)]`` for the centres near each distance (the
    pulses of all other centres are exactly 0). The heights are the per-centre expression
    ``[1 - |d - c| / delta]+`` bit for bit, the slopes its derivative where it is positive."""
    with torch.no_grad():
        below = torch.floor(dist / delta).clamp_(0, len(centres) - 2).long()
    zero = dist.new_zeros(())
    out = []
    for offset in _NEAR_CENTRES:
        index = below + offset
        inside = (index >= 0) & (index < len(centres))
        index = index.clamp(0, len(centres) - 1)
        centre = centres[index]
        height = torch.where(inside, torch.relu(1 - torch.abs(dist - centre) / delta), zero)
        slope = torch.where(height > 0, -torch.sign(dist - centre) / delta, zero)
        out.append((index, height, slope))
    return out


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
            for index, height, _ in _pulse_weights(dist[rows], centres, delta):
                for hist, mask in zip(hists, masks):
                    hist[rows].scatter_add_(1, index, torch.where(mask[rows], height, zero))
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
            near = _pulse_weights(dist[rows], centres, delta)
            for grad_hist, mask in zip(grad_hists, ctx.masks):
                if grad_hist is None:
                    continue
                g = grad_hist[rows]
                pair_grad = sum(g.gather(1, index) * slope for index, _, slope in near)
                grad[rows] += torch.where(mask[rows], pair_grad, zero)
        return grad, None, None, None


def pulse_histograms(dist, masks, centres, delta):
    """One ``(N, len(centres))`` histogram per mask in ``masks`` (module docstring)."""
    return _PulseHistograms.apply(dist, masks, centres, delta)
