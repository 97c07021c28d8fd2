"""Triplet mining by margin violation."""

import math

import torch

from ..ops.blocked_triplets import select_triplets
from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner


class TripletMarginMiner(BaseMiner):
    """Keeps triplets by their margin ``m = d_an - d_ap`` (``s_ap - s_an`` for similarities).

    ``type_of_triplets``: ``"all"`` keeps ``m <= margin``; ``"hard"`` keeps ``m <= margin`` and
    ``m <= 0``; ``"semihard"`` keeps ``m <= margin`` and ``m > 0``; ``"easy"`` keeps
    ``m > margin``. Any other value behaves like ``"all"``, as in the reference.
    (Schroff et al., "FaceNet", CVPR 2015, for the semi-hard triplets.)

    Only the returned triplets are materialised (anchors are scanned in blocks). Statistics
    ``pos_pair_dist``, ``neg_pair_dist``, ``avg_triplet_margin``: means over all triplets (NaN
    when there are none).
    """

    def __init__(self, margin=0.2, type_of_triplets="all", **kwargs):
        super().__init__(**kwargs)
        self.margin = margin
        self.type_of_triplets = type_of_triplets
        self.add_to_recordable_attributes(name="margin", is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["pos_pair_dist", "neg_pair_dist", "avg_triplet_margin"], is_stat=True
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        self.set_stats(mat, pos_mask, neg_mask)
        inverted = self.distance.is_inverted

        def keep(a, p):
            ap = mat[a, p].unsqueeze(1)
            an = mat[a]
            # Same arithmetic as the per-triplet formula, so ties break identically.
            triplet_margin = ap - an if inverted else an - ap
            return self.condition(triplet_margin)

        return select_triplets(pos_mask, neg_mask, keep)

    def condition(self, triplet_margin):
        if self.type_of_triplets == "easy":
            return triplet_margin > self.margin
        keep = triplet_margin <= self.margin
        if self.type_of_triplets == "hard":
            keep &= triplet_margin <= 0
        elif self.type_of_triplets == "semihard":
            keep &= triplet_margin > 0
        return keep

    def set_stats(self, mat, pos_mask, neg_mask):
        """Means over all triplets, from per-anchor sums (no triplet is listed)."""
        if not self.collect_stats:
            return
        num_pos = lmu.count_per_row(pos_mask).double()
        num_neg = lmu.count_per_row(neg_mask).double()
        num_triplets = float((num_pos * num_neg).sum())
        if num_triplets == 0:
            self.pos_pair_dist = self.neg_pair_dist = self.avg_triplet_margin = math.nan
            return
        mat64 = mat.double()
        pos_sum = float((torch.where(pos_mask, mat64, 0).sum(dim=1) * num_neg).sum())
        neg_sum = float((torch.where(neg_mask, mat64, 0).sum(dim=1) * num_pos).sum())
        self.pos_pair_dist = pos_sum / num_triplets
        self.neg_pair_dist = neg_sum / num_triplets
        gap = self.pos_pair_dist - self.neg_pair_dist
        self.avg_triplet_margin = gap if self.distance.is_inverted else -gap
