"""FastAP loss (Cakir, He, Xia, Kulis & Sclaroff, "Deep Metric Learning to Rank", CVPR 2019)."""

import torch

from ..distances import LpDistance
from ..ops.pulse_histograms import pulse_histograms
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import SizeArgumentError, require
from .base_metric_loss_function import BaseMetricLossFunction


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
        pos_mask, neg_mask = lmu.get_label_masks(labels, relation=self.label_relation)
        num_pos = lmu.count_per_row(pos_mask)
        has_pos = num_pos > 0
        if not bool(has_pos.any()):
            return self.zero_losses()
        dist = self.distance(embeddings)
        if dtype == torch.float16:
            dist = dist.float()  # histogram sums over N values need float32 accumulation
        h_max = 2**self.distance.power
        centres = torch.linspace(0.0, h_max, steps=self.num_edges, device=dist.device, dtype=dist.dtype)
        pos_hist, all_hist = pulse_histograms(dist, (pos_mask, pos_mask | neg_mask), centres,
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
