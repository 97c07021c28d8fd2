"""Lifted structure losses: the original (Oh Song et al., "Deep Metric Learning via Lifted
Structured Feature Embedding", CVPR 2016) and the generalized form of Hermans et al., "In
Defense of the Triplet Loss for Person Re-Identification", 2017 (page 4)."""

import torch

from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import grouped_logsumexp, masked_logsumexp
from ..utils import common_functions as c_f
from .generic_pair_loss import GenericPairLoss


class LiftedStructureLoss(GenericPairLoss):
    """Each positive pair against every negative pair of either of its two members.

    For a positive pair ``(i, j)`` (distances ``d``)::

        J_ij = log sum_{(a, n) negative pair, a in {i, j}} exp(neg_margin - d_an) + d_ij - pos_margin
        loss_ij = [J_ij]+^2 / 2

    (for a similarity the margins flip: ``s_an - neg_margin`` and ``pos_margin - s_ij``). An
    empty set of negatives contributes 0. ``a in {i, j}`` compares indices, so with a separate
    reference set ``j`` names the query row with the same index (as in the reference library).

    Args:
        neg_margin: negatives closer than this are penalised.
        pos_margin: positives farther than this are penalised.

    The negatives' log-sum-exp is taken once per anchor and combined per positive pair, so
    memory grows with the ``N x M`` matrix, not with (positive pairs x negative pairs).
    """

    def __init__(self, neg_margin=1, pos_margin=0, **kwargs):
        super().__init__(mat_based_loss=False, **kwargs)
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def masked_pair_loss(self, mat, masks):
        found = masks.positive_pairs_if_any_negative()
        if found is None:
            return self.zero_losses()
        a1, p = found
        work = mat.to(accumulation_dtype(mat.dtype))
        neg_terms = self.distance.margin(self.neg_margin, work)
        anchor_lse = masked_logsumexp(neg_terms, masks.neg, empty=None)
        return self._pair_losses(work[a1, p], anchor_lse, masks.neg.any(dim=1), a1, p, mat.dtype)

    def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
        a1, p, a2, _ = indices_tuple
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        dtype = pos_pairs.dtype
        neg_terms = self.distance.margin(self.neg_margin, neg_pairs.to(accumulation_dtype(dtype)))
        num_anchors = int(torch.maximum(a1.max(), a2.max())) + 1
        anchor_lse, has_neg = grouped_logsumexp(neg_terms, a2, num_anchors)
        return self._pair_losses(pos_pairs.to(neg_terms.dtype), anchor_lse, has_neg, a1, p, dtype)

    def _pair_losses(self, pos_values, anchor_lse, has_neg, a1, p, dtype):
        # p may exceed the anchor range (a larger reference set): such rows have no negatives.
        size = max(len(anchor_lse), int(p.max()) + 1)
        sentinel = c_f.neg_inf(anchor_lse.dtype)
        anchor_lse = torch.cat([anchor_lse, anchor_lse.new_full((size - len(anchor_lse),), sentinel)])
        has_neg = torch.cat([has_neg, has_neg.new_zeros(size - len(has_neg))])
        # A pair (i, i) (possible with a reference set) counts anchor i's negatives once.
        distinct = p != a1
        other_lse = torch.where(distinct, anchor_lse[p], sentinel)
        pair_has_neg = has_neg[a1] | (has_neg[p] & distinct)
        neg_part = torch.where(pair_has_neg, torch.logaddexp(anchor_lse[a1], other_lse), 0.0)
        violation = neg_part + self.distance.margin(pos_values, self.pos_margin)
        losses = torch.relu(violation) ** 2 / 2
        return {"loss": {"losses": losses.to(dtype), "indices": (a1, p), "reduction_type": "pos_pair"}}


class GeneralizedLiftedStructureLoss(GenericPairLoss):
    """One term per anchor: soft-maximum positive distance against soft-minimum negative distance.

    For anchor ``i`` with positives ``P_i`` and negatives ``N_i``::

        L_i = [ log sum_{j in P_i} exp(d_ij - pos_margin) + log sum_{k in N_i} exp(neg_margin - d_ik) ]+

    (margins flip for a similarity). An empty set contributes 0; every anchor is averaged.

    Args:
        neg_margin: the margin inside the negative term.
        pos_margin: the margin inside the positive term.
    """

    accepts_bool_masks = True

    def __init__(self, neg_margin=1, pos_margin=0, **kwargs):
        super().__init__(mat_based_loss=True, **kwargs)
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        work = mat.to(accumulation_dtype(mat.dtype))
        pos_lse = masked_logsumexp(self.distance.margin(work, self.pos_margin), pos_mask.bool())
        neg_lse = masked_logsumexp(self.distance.margin(self.neg_margin, work), neg_mask.bool())
        return {
            "loss": {
                "losses": torch.relu(pos_lse + neg_lse).to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }
