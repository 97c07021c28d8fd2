"""Distance-weighted sampling of negatives."""

import torch

from ..distances import LpDistance
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner, empty_indices


class DistanceWeightedMiner(BaseMiner):
    """Samples negatives with probability inversely proportional to the density of pairwise
    distances on the unit sphere (Wu et al., "Sampling Matters in Deep Embedding Learning",
    ICCV 2017):

    ``log w = (2 - D) log d - ((D - 3) / 2) log(1 - d^2 / 4)``, with ``d`` clamped below at
    ``cutoff`` and ``w = 0`` where ``d >= nonzero_loss_cutoff``, for same-label pairs, and where
    the formula is not finite. Each anchor gets as many triplets as its class has members in
    the reference set: positives uniform, negatives drawn in proportion to ``w``.

    Requires ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the default). Works well
    for low-dimensional (about 64) embeddings.
    """

    def __init__(self, cutoff=0.5, nonzero_loss_cutoff=1.4, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        self.add_to_recordable_attributes(
            list_of_names=["cutoff", "nonzero_loss_cutoff"], is_stat=False
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        dim = embeddings.size(1)
        mat = self.distance(embeddings, ref_emb).clamp(min=self.cutoff)
        log_weights = (2.0 - float(dim)) * torch.log(mat) - (float(dim - 3) / 2) * torch.log(
            1.0 - 0.25 * (mat**2.0)
        )
        not_finite = ~torch.isfinite(log_weights)
        different_class = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
        log_weights = log_weights * different_class
        finite_values = log_weights[~not_finite]
        if finite_values.numel() == 0:
            # Every weight is degenerate: nothing can be sampled (the reference raises here).
            return empty_indices(labels.device, 3)
        weights = torch.exp(log_weights - finite_values.max())
        weights = weights * (different_class & (mat < self.nonzero_loss_cutoff))
        weights = weights.masked_fill(not_finite, 0)
        return sample_triplets(labels, ref_labels, weights, same_set=lmu.is_same_set(labels, ref_labels))


def sample_triplets(labels, ref_labels, weights, same_set):
    """As many triplets per anchor as its class has members in the reference set: positives
    uniform among the anchor's positives, negatives drawn in proportion to ``weights``.

    The same distribution as ``lmu.get_random_triplet_indices(..., weights=...)``, drawn for all
    anchors at once (inverse CDF per row) instead of one ``multinomial`` per class. Anchors
    without a positive, or whose weights are all zero, get no triplet.
    """
    device = labels.device
    order = torch.argsort(ref_labels, stable=True)
    sorted_labels = ref_labels[order]
    start = torch.searchsorted(sorted_labels, labels)
    class_size = torch.searchsorted(sorted_labels, labels, right=True) - start
    num_positives = class_size - 1 if same_set else class_size
    cdf = torch.cumsum(weights.double(), dim=1)
    total = cdf[:, -1]
    valid = (num_positives > 0) & (total > 0)
    anchors = torch.where(valid)[0]
    if len(anchors) == 0:
        return empty_indices(device, 3)
    per_anchor = class_size[anchors]
    slots = int(per_anchor.max())
    # Draw `slots` candidates per anchor and keep the first `class_size` of each row.
    keep = torch.arange(slots, device=device).unsqueeze(0) < per_anchor.unsqueeze(1)
    u = torch.rand((len(anchors), slots), dtype=torch.float64, device=device)
    negatives = torch.searchsorted(cdf[anchors], u * total[anchors].unsqueeze(1), right=True)
    negatives = negatives.clamp(max=weights.shape[1] - 1)
    rank = (
        torch.rand((len(anchors), slots), device=device) * num_positives[anchors].unsqueeze(1)
    ).long()
    rank = torch.minimum(rank, num_positives[anchors].unsqueeze(1) - 1)
    if same_set:
        # Skip the anchor's own position inside its class's block of the sorted order.
        own = torch.empty_like(order)
        own[order] = torch.arange(len(order), device=device)
        own_rank = (own[anchors] - start[anchors]).unsqueeze(1)
        rank = rank + (rank >= own_rank).long()
    positives = order[start[anchors].unsqueeze(1) + rank]
    a = anchors.unsqueeze(1).expand(-1, slots)
    return a[keep], positives[keep], negatives[keep]
