"""Template for losses computed from positive and negative pairs."""

import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import ArgumentError
from ..utils.pair_masks import PairMasks
from .base_metric_loss_function import BaseMetricLossFunction
from .reduction_shortcut import plain_reduction_for


class GenericPairLoss(BaseMetricLossFunction):
    """Builds pairs from labels or a miner tuple and hands them to ``_compute_loss``.

    Args:
        mat_based_loss: if True, ``_compute_loss(mat, pos_mask, neg_mask)`` receives the whole
            distance matrix with float masks of positive / negative cells; otherwise
            ``_compute_loss(pos_pair, neg_pair, indices_tuple)`` receives the pair values.

    With labels and no miner the masks come straight from label equality (no index lists); a
    :class:`~deepmetric.utils.pair_masks.PairMasks` tuple is used the same way.
    When every index list would have at most one element the loss is zero.
    """

    # Mat-based subclasses whose ``_compute_loss`` only uses the masks as booleans set this, and
    # then receive the boolean label masks as they are instead of two (N, M) float copies.
    accepts_bool_masks = False

    def __init__(self, mat_based_loss, **kwargs):
        super().__init__(**kwargs)
        self.loss_method = self.mat_based_loss if mat_based_loss else self.pair_based_loss

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        if self.has_dense_pairs(labels, indices_tuple):
            return self._loss_from_masks(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        indices_tuple = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if all(len(x) <= 1 for x in indices_tuple):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        return self.loss_method(mat, indices_tuple)

    @staticmethod
    def has_dense_pairs(labels, indices_tuple):
        """True when the pairs come as masks: every label pair (labels and no tuple), or a
        :class:`~deepmetric.utils.pair_masks.PairMasks`. Such pairs are reduced from the distance
        matrix under the masks; any other tuple is a list of pairs."""
        return isinstance(indices_tuple, PairMasks) or (indices_tuple is None and labels is not None)

    @staticmethod
    def label_masks(labels, ref_labels, indices_tuple=None):
        """Positive and negative masks (from the labels, or the given :class:`PairMasks`), or
        ``None`` when each holds at most one pair (zero loss)."""
        if isinstance(indices_tuple, PairMasks):
            pos_mask, neg_mask = indices_tuple.pos, indices_tuple.neg
        else:
            pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels)
        if int(torch.count_nonzero(pos_mask)) <= 1 and int(torch.count_nonzero(neg_mask)) <= 1:
            return None
        return pos_mask, neg_mask

    def plain_masked_reductions(self, labels, indices_tuple):
        """The plain reductions of the sub-losses when they can be taken straight from the pair
        masks (:meth:`has_dense_pairs`, a mean/sum/threshold-like reducer for every sub-loss);
        otherwise None and the pairs are listed as usual."""
        if not self.has_dense_pairs(labels, indices_tuple):
            return None
        reductions = [plain_reduction_for(self, name) for name in self._sub_loss_names()]
        return None if None in reductions else reductions

    @classmethod
    def positive_pairs_with_negatives(cls, labels, ref_labels, indices_tuple=None):
        """``(a1, p, pos_mask, neg_mask)`` for losses that contrast every positive pair with its
        anchor's negatives, or ``None`` when there is no positive pair or no negative at all."""
        masks = cls.label_masks(labels, ref_labels, indices_tuple)
        if masks is None:
            return None
        pos_mask, neg_mask = masks
        a1, p = torch.where(pos_mask)
        if len(a1) == 0 or not bool(neg_mask.any()):
            return None
        return a1, p, pos_mask, neg_mask

    def _loss_from_masks(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        masks = self.label_masks(labels, ref_labels, indices_tuple)
        if masks is None:
            return self.zero_losses()
        pos_mask, neg_mask = masks
        mat = self.distance(embeddings, ref_emb)
        if self.loss_method == self.mat_based_loss:
            if self.accepts_bool_masks:
                return self._compute_loss(mat, pos_mask, neg_mask)
            return self._compute_loss(mat, pos_mask.to(mat.dtype), neg_mask.to(mat.dtype))
        a1, p = torch.where(pos_mask)
        a2, n = torch.where(neg_mask)
        pos_pair = mat[pos_mask] if len(a1) > 0 else []
        neg_pair = mat[neg_mask] if len(a2) > 0 else []
        return self._compute_loss(pos_pair, neg_pair, (a1, p, a2, n))

    def _compute_loss(self, *args):
        raise NotImplementedError

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
