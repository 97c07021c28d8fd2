"""FastAP loss (Cakir, He, Xia, Kulis & Sclaroff, "Deep Metric Learning to Rank", CVPR 2019)."""

import torch

from ..distances import LpDistance
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import SizeArgumentError, require
from .base_metric_loss_function import BaseMetricLossFunction

# Rows of the distance matrix handled at once; bounds the temporaries to a few of this size.
_BLOCK_ELEMENTS = 1 << 22


class FastAPLoss(BaseMetricLossFunction):
    """Average precision of each element's ranking of the batch, estimated from soft
    histograms of distances (triangular pulses on ``num_bins + 1`` evenly spaced centres
    ``c_l`` in ``[0, 2**power]``, spacing ``delta``):

        h+_il = sum_{j in P_i} [1 - |d_ij - c_l| / delta]+,   h-_il likewise over N_i
        H+_il = sum_{k <= l} h+_ik,   H_il = sum_{k <= l} (h+_ik + h-_ik)
        FastAP_i = (1 / |P_i|) sum_l h+_il H+_il / H_il        (cells with h+ H+ > 0, H > 0)
        loss_i = (1 - FastAP_i) * w_i                         (elements with a positive)

    ``w_i`` are miner weights (all ones without a miner). The distance must be
    ``LpDistance(normalize_embeddings=True, p=2)``, any ``power`` (default squared L2).
    ``"loss"``: element, indices = the elements that have a positive.

    Each distance touches only the centres next to it, so the histograms are built by
    scattering a few weights per pair: O(N^2) work and memory, nothing of size N^2 x bins.

    Args:
        num_bins: number of histogram bins (``num_bins + 1`` centres).
    """

    # indices_tuple only weights rows by how often they occur in it
    indices_tuple_is_structured = False

    def __init__(self, num_bins=10, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, normalize_embeddings=True, p=2)
        self.num_bins = int(num_bins)
        require(self.num_bins >= 1, f"FastAPLoss needs num_bins >= 1, got {num_bins}", SizeArgumentError)
        self.num_edges = self.num_bins + 1
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        dtype = embeddings.dtype
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=dtype)
        pos_mask, neg_mask = lmu.get_label_masks(labels)
        num_pos = lmu.count_per_row(pos_mask)
        has_pos = num_pos > 0
        if not bool(has_pos.any()):
            return self.zero_losses()
        dist = self.distance(embeddings)
        if dtype == torch.float16:
            dist = dist.float()  # histogram sums over N values need float32 accumulation
        h_max = 2**self.distance.power
        centres = torch.linspace(0.0, h_max, steps=self.num_edges, device=dist.device, dtype=dist.dtype)
        pos_hist, all_hist = _PulseHistograms.apply(dist, (pos_mask, pos_mask | neg_mask), centres,
                                                    h_max / self.num_bins)
        pos_cum = torch.cumsum(pos_hist, dim=1)
        all_cum = torch.cumsum(all_hist, dim=1)
        product = pos_hist * pos_cum
        safe = (product > 0) & (all_cum > 0)
        if not bool(safe.any()):
            return self.zero_losses()
        ratio = torch.where(safe, product / torch.where(safe, all_cum, torch.ones_like(all_cum)), 0)
        fast_ap = ratio.sum(dim=1)[has_pos] / num_pos[has_pos]
        loss = (1 - fast_ap.to(dtype)) * miner_weights[has_pos]
        return {
            "loss": {
                "losses": loss,
                "indices": torch.where(has_pos)[0],
                "reduction_type": "element",
            }
        }

    def get_default_distance(self):
        return LpDistance(power=2)


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
    """Per-row soft histograms of ``dist`` restricted to each boolean mask in ``masks``:
    ``out[k][i, l] = sum_j masks[k][i, j] * [1 - |dist_ij - centres_l| / delta]+``.

    Rows are processed in blocks and the backward pass recomputes the pulse weights, so the
    memory held between passes is ``dist`` itself.
    """

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
