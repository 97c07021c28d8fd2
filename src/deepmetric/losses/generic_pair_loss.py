"""Template for losses computed from positive and negative pairs."""

import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import ArgumentError
from ..utils.pair_masks import PairMasks
from .base_metric_loss_function import BaseMetricLossFunction


class GenericPairLoss(BaseMetricLossFunction):
    """Builds the pairs from labels or a miner tuple and hands them to ``_compute_loss``.

    Args:
        mat_based_loss: if True, ``_compute_loss(mat, pos_mask, neg_mask)`` receives the whole
            distance matrix with masks of the positive / negative cells (float 0/1, or boolean
            for subclasses that set ``accepts_bool_masks``); otherwise
            ``_compute_loss(pos_pair, neg_pair, indices_tuple)`` receives the listed pair values.

    Every label pair (labels and no miner), or a :class:`~deepmetric.utils.pair_masks.PairMasks`
    tuple, arrives as boolean masks at :meth:`masked_pair_loss`. By default it lists the pairs
    for a pair-based ``_compute_loss``; a subclass that can work on the masks overrides it (and
    may hand its reducer lazy :class:`~deepmetric.reducers.terms.PairTerms`). When every index
    list would have at most one element the loss is zero.
    """

    # Mat-based subclasses whose ``_compute_loss`` only uses the masks as booleans set this, and
    # then receive the boolean masks as they are instead of two (N, M) float copies.
    accepts_bool_masks = False

    def __init__(self, mat_based_loss, **kwargs):
        super().__init__(**kwargs)
        self.mat_based = mat_based_loss
        self.loss_method = self.mat_based_loss if mat_based_loss else self.pair_based_loss

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        if indices_tuple is None:
            indices_tuple = PairMasks(*lmu.get_label_masks(labels, ref_labels))
        if isinstance(indices_tuple, PairMasks):
            masks = indices_tuple
            if masks.at_most_one_pair_each():
                return self.zero_losses()
            return self.masked_pair_loss(self.distance(embeddings, ref_emb), masks)
        indices_tuple = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if all(len(x) <= 1 for x in indices_tuple):
            return self.zero_losses()
        return self.loss_method(self.distance(embeddings, ref_emb), indices_tuple)

    def masked_pair_loss(self, mat, masks):
        """The loss of every pair marked in ``masks`` (a :class:`PairMasks` over ``mat``)."""
        if not self.mat_based:
            return self.pair_based_loss(mat, masks.to_pairs())
        if self.accepts_bool_masks:
            return self._compute_loss(mat, masks.pos, masks.neg)
        return self._compute_loss(mat, masks.pos.to(mat.dtype), masks.neg.to(mat.dtype))

    def _compute_loss(self, *args):
        raise NotImplementedError

    @staticmethod
    def listed_pair_losses(pos_loss, neg_loss, indices_tuple):
        """``{"pos_loss", "neg_loss"}`` entries for per-pair losses of the listed pairs (0 for a
        side without pairs)."""
        return {
            "pos_loss": {
                "losses": pos_loss,
                "indices": lmu.pos_pairs_from_tuple(indices_tuple),
                "reduction_type": "pos_pair",
            },
            "neg_loss": {
                "losses": neg_loss,
                "indices": lmu.neg_pairs_from_tuple(indices_tuple),
                "reduction_type": "neg_pair",
            },
        }

    def mat_based_loss(self, mat, indices_tuple):
        a1, p, a2, n = indices_tuple
        pos_mask, neg_mask = torch.zeros_like(mat), torch.zeros_like(mat)
        pos_mask[a1, p] = 1
        neg_mask[a2, n] = 1
        self._assert_either_pos_or_neg(pos_mask, neg_mask)
        return self._compute_loss(mat, pos_mask, neg_mask)

    def pair_based_loss(self, mat, indices_tuple):
        a1, p, a2, n = indices_tuple
        pos_pair = mat[a1, p] if len(a1) > 0 else []
        neg_pair = mat[a2, n] if len(a2) > 0 else []
        return self._compute_loss(pos_pair, neg_pair, indices_tuple)

    @staticmethod
    def _assert_either_pos_or_neg(pos_mask, neg_mask):
        if bool(torch.any((pos_mask != 0) & (neg_mask != 0))):
            raise ArgumentError(
                "Each pair should be either be positive or negative, "
                "but indices_tuple marks some pair as both"
            )
