"""Contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
Mapping", CVPR 2006)."""

import torch

from ..reducers import AvgNonZeroReducer
from ..reducers.terms import PairTerms
from .generic_pair_loss import GenericPairLoss


class ContrastiveLoss(GenericPairLoss):
    """Pulls positive pairs within ``pos_margin`` and pushes negatives beyond ``neg_margin``.

    For a distance: ``pos = [d_ap - pos_margin]+`` and ``neg = [neg_margin - d_an]+``.
    For a similarity the roles flip: ``pos = [pos_margin - s_ap]+``, ``neg = [s_an - neg_margin]+``
    (then sensible margins are pos 1, neg 0). Sub-losses ``pos_loss`` and ``neg_loss`` are each
    reduced (default: mean of the non-zero terms) and summed.

    With labels and no miner, every pair's loss is computed on the whole matrix and handed to
    the reducer as :class:`~deepmetric.reducers.terms.PairTerms` under the label masks: the
    built-in reducers reduce them without listing the pairs.
    """

    def __init__(self, pos_margin=0, neg_margin=1, **kwargs):
        super().__init__(mat_based_loss=False, **kwargs)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def masked_pair_loss(self, mat, masks):
        return {
            "pos_loss": PairTerms(self.get_per_pair_loss(mat, "pos"), masks.pos, "pos_pair").entry(),
            "neg_loss": PairTerms(self.get_per_pair_loss(mat, "neg"), masks.neg, "neg_pair").entry(),
        }

    def _compute_loss(self, pos_pair_dist, neg_pair_dist, indices_tuple):
        pos_loss, neg_loss = 0, 0
        if len(pos_pair_dist) > 0:
            pos_loss = self.get_per_pair_loss(pos_pair_dist, "pos")
        if len(neg_pair_dist) > 0:
            neg_loss = self.get_per_pair_loss(neg_pair_dist, "neg")
        return self.listed_pair_losses(pos_loss, neg_loss, indices_tuple)

    def get_per_pair_loss(self, pair_dists, pos_or_neg):
        if pos_or_neg == "pos":
            return self.pos_calc(pair_dists, self.pos_margin)
        return self.neg_calc(pair_dists, self.neg_margin)

    def pos_calc(self, pos_pair, margin):
        return torch.nn.functional.relu(self.distance.margin(pos_pair, margin))

    def neg_calc(self, neg_pair, margin):
        return torch.nn.functional.relu(self.distance.margin(margin, neg_pair))

    def get_default_reducer(self):
        return AvgNonZeroReducer()

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]
