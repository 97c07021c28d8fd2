"""Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019)."""

import torch

from ..distances import CosineSimilarity
from ..ops.masked_squared_hinge import masked_squared_hinge_sum, squared_hinges
from ..reducers.terms import PairTerms
from .generic_pair_loss import GenericPairLoss


class IntraPairVarianceLoss(GenericPairLoss):
    """Penalises positive and negative pairs that stray too far from their group's mean.

    With ``mu+`` / ``mu-`` the mean positive / negative similarity of the batch (not detached):

        pos_k = [(1 - pos_eps) mu+ - s_k]+^2        neg_k = [s_k - (1 + neg_eps) mu-]+^2

    and for a distance (``is_inverted=False``) ``pos_k = [d_k - (1 + pos_eps) mu+]+^2``,
    ``neg_k = [(1 - neg_eps) mu- - d_k]+^2``. Sub-losses ``pos_loss`` and ``neg_loss``.
    Meant to be added to TupletMarginLoss (same paper).

    Args:
        pos_eps: relative tolerance around the mean positive value.
        neg_eps: relative tolerance around the mean negative value.

    With labels and no miner the pair terms go to the reducer unlisted: their sums come from one
    fused pass over the matrix (``ops.masked_squared_hinge``).
    """

    def __init__(self, pos_eps=0.01, neg_eps=0.01, **kwargs):
        super().__init__(mat_based_loss=False, **kwargs)
        self.pos_eps = pos_eps
        self.neg_eps = neg_eps
        self.add_to_recordable_attributes(list_of_names=["pos_eps", "neg_eps"], is_stat=False)

    def masked_pair_loss(self, mat, masks):
        loss_dict = {}
        sides = (("pos", masks.pos, self.pos_eps), ("neg", masks.neg, self.neg_eps))
        for side, mask, eps in sides:
            sigma, beta = self._hinge_coefficients(eps, self._should_increase(side == "pos"))
            loss_dict[f"{side}_loss"] = _SquaredHingeTerms(mat, mask, sigma, beta, f"{side}_pair").entry()
        return loss_dict

    def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
        pos_loss, neg_loss = 0, 0
        if len(pos_pairs) > 0:
            pos_loss = self._pair_losses(pos_pairs, torch.mean(pos_pairs), self.pos_eps, True)
        if len(neg_pairs) > 0:
            neg_loss = self._pair_losses(neg_pairs, torch.mean(neg_pairs), self.neg_eps, False)
        return self.listed_pair_losses(pos_loss, neg_loss, indices_tuple)

    def _pair_losses(self, values, mean, eps, positive):
        increase = self._should_increase(positive)
        return torch.nn.functional.relu(self.variance_with_eps(values, mean, eps, increase)) ** 2

    def _should_increase(self, positive):
        """Positives should get closer than their mean and negatives farther; "closer" means a
        larger value for a similarity and a smaller one for a distance."""
        return positive == self.distance.is_inverted

    @staticmethod
    def _hinge_coefficients(eps, incentivize_increase):
        """``(sigma, beta)`` with ``variance_with_eps = sigma * value + beta * mean``."""
        return (-1, 1 - eps) if incentivize_increase else (1, -(1 + eps))

    def variance_with_eps(self, pairs, mean_sim, eps, incentivize_increase):
        """Signed excess over the tolerated mean, before the hinge."""
        sigma, beta = self._hinge_coefficients(eps, incentivize_increase)
        return beta * mean_sim + sigma * pairs

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_default_distance(self):
        return CosineSimilarity()


class _SquaredHingeTerms(PairTerms):
    """``[sigma * s_ij + beta * mean_mask(s)]_+^2`` for the cells of ``mask``, summed by the fused
    kernel; listed from the same formula."""

    def __init__(self, mat, mask, sigma, beta, reduction_type):
        super().__init__(mat, mask, reduction_type)
        self.sigma, self.beta = sigma, beta

    def materialize(self):
        rows, cols = torch.where(self.mask)
        return squared_hinges(self.values, self.mask, self.sigma, self.beta)[rows, cols], (rows, cols)

    def kept_sum(self, low=None, high=None):
        return masked_squared_hinge_sum(self.values, self.mask, self.sigma, self.beta, low, high)

    def pair_matrix(self, num_rows, num_cols):
        return PairTerms(squared_hinges(self.values, self.mask, self.sigma, self.beta), self.mask,
                         self.reduction_type).pair_matrix(num_rows, num_cols)
