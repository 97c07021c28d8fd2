"""Pairs drawn uniformly across a histogram of their distances."""

import torch

from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner


class UniformHistogramMiner(BaseMiner):
    """Spreads the mined pairs evenly over the range of distances.

    Separately for positive and negative pairs: the values' range ``[min, max]`` is cut into
    ``num_bins`` equal bins (``edge_i <= v < edge_{i+1}``, the last bin closed), and from every
    non-empty bin ``pos_per_bin`` (or ``neg_per_bin``) pairs are drawn uniformly with
    replacement, in bin order, by one ``torch.multinomial`` per bin as in the reference, so the
    same ``torch.manual_seed`` gives the same pairs. Works with any distance.
    """

    def __init__(self, num_bins=100, pos_per_bin=10, neg_per_bin=10, **kwargs):
        super().__init__(**kwargs)
        self.num_bins = int(num_bins)
        self.pos_per_bin = int(pos_per_bin)
        self.neg_per_bin = int(neg_per_bin)
        self.add_to_recordable_attributes(
            list_of_names=["pos_per_bin", "neg_per_bin"], is_stat=False
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        a1, p = torch.where(pos_mask)
        a2, n = torch.where(neg_mask)
        if len(a1) > 0:
            a1, p = self.get_uniformly_distributed_pairs(mat[a1, p], a1, p, self.pos_per_bin)
        if len(a2) > 0:
            a2, n = self.get_uniformly_distributed_pairs(mat[a2, n], a2, n, self.neg_per_bin)
        return a1, p, a2, n

    def get_bins(self, pairs):
        return torch.linspace(
            torch.min(pairs).item(),
            torch.max(pairs).item(),
            steps=self.num_bins + 1,
            device=pairs.device,
            dtype=pairs.dtype,
        )

    def filter_by_bin(self, distances, bins, num_pairs):
        """Positions of ``num_pairs`` draws (with replacement) from each non-empty bin."""
        picks = []
        for members in _bin_members(distances, bins):
            # One uniform multinomial per bin, in bin order: the reference's draws.
            draws = torch.multinomial(
                torch.ones_like(members, dtype=torch.float), num_pairs, replacement=True
            )
            picks.append(members[draws])
        return torch.cat(picks, dim=0)

    def get_uniformly_distributed_pairs(self, distances, anchors, others, num_pairs):
        bins = self.get_bins(distances)
        idx = self.filter_by_bin(distances, bins, num_pairs)
        return anchors[idx], others[idx]


def _bin_members(distances, bins):
    """Ascending positions of the values in each non-empty bin, bins in order; bin ``i`` holds
    ``bins[i] <= v < bins[i + 1]`` (the last bin closed on the right)."""
    if bool((bins[1:] >= bins[:-1]).all()):
        # Ordered edges: one bucketize. right=True puts a value equal to an inner edge in the
        # bin that starts there and the maximum in the last bin.
        bin_of = torch.bucketize(distances, bins[1:-1], right=True)
        order = torch.argsort(bin_of, stable=True)
        counts = torch.bincount(bin_of, minlength=len(bins) - 1).tolist()
        return [members for members in torch.split(order, counts) if len(members) > 0]
    # linspace can return float16 edges out of order by a rounding step; then test every bin
    # as written (a value may then belong to two bins, as in the reference).
    last = len(bins) - 2
    out = []
    for i in range(len(bins) - 1):
        upper = distances <= bins[i + 1] if i == last else distances < bins[i + 1]
        members = torch.where((bins[i] <= distances) & upper)[0]
        if len(members) > 0:
            out.append(members)
    return out
