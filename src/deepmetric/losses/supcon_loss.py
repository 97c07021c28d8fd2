"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020)."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import masked_logsumexp
from ..ops.tiled_logsumexp import tiled_logsumexp
from ..reducers import AvgNonZeroReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ._tiled_pairs import TiledLabelPairs, check_tile_size
from .generic_pair_loss import GenericPairLoss


class SupConLoss(GenericPairLoss):
    """Average log-probability of an anchor's positives under a softmax over all its pairs.

    With ``z_ij = s_ij / t`` (``-d_ij / t`` for a distance) and ``A_i = P_i u N_i``::

        L_i = -1/|P_i| * sum_{j in P_i} ( z_ij - log sum_{k in A_i} exp(z_ik) )

    Anchors without positives give 0 (dropped by the default AvgNonZeroReducer); a batch with no
    positive or no negative pair gives zero.

    Args:
        temperature: ``t``.
        tile_size: None (default) for the dense path; a positive int computes each anchor's
            log-sum-exp and positive-logit sum ``tile_size`` anchor rows at a time, recomputing
            each tile in the backward pass, so memory grows as ``O(tile_size x M + N x D)``
            instead of ``O(N x M)`` (used when the pairs come from labels, without an
            ``indices_tuple``). Values and gradients equal the dense path's up to rounding.
    """

    accepts_bool_masks = True

    def __init__(self, temperature=0.1, tile_size=None, **kwargs):
        super().__init__(mat_based_loss=True, **kwargs)
        self.temperature = temperature
        self.tile_size = check_tile_size(type(self).__name__, tile_size)
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if self.tile_size is None or indices_tuple is not None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        return self.tiled_loss(embeddings, labels, ref_emb, ref_labels)

    def tiled_loss(self, embeddings, labels, ref_emb, ref_labels):
        """The dense path's loss of every label pair, a tile of anchors at a time:
        ``lse_i`` over ``P_i u N_i`` and ``sum_{j in P_i} z_ij`` come from one tiled pass."""
        pairs = TiledLabelPairs(labels, ref_labels, self.label_relation, self.tile_size)
        a1, _, num_pos, num_neg = pairs.summary()
        # The dense path's zero cases: at most one pair of each kind, or nothing to contrast.
        if (len(a1) <= 1 and num_neg <= 1) or len(a1) == 0 or num_neg == 0:
            return self.zero_losses()

        def logits(query_rows, ref):
            return self._logits(self.distance(query_rows, ref))

        def kept(start, end):
            pos, neg = pairs.masks(start, end)
            return pos | neg

        log_denominator, pos_logit_sum = tiled_logsumexp(
            logits, embeddings, ref_emb, keep=kept, weights=lambda s, e: pairs.masks(s, e)[0],
            tile_size=self.tile_size,
        )
        dtype = torch.promote_types(embeddings.dtype, ref_emb.dtype)
        return self._supcon_terms(log_denominator, pos_logit_sum, num_pos, dtype)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        pos_mask, neg_mask = pos_mask.bool(), neg_mask.bool()
        if not (bool(pos_mask.any()) and bool(neg_mask.any())):
            return self.zero_losses()
        logits = self._logits(mat)
        log_denominator = masked_logsumexp(logits, pos_mask | neg_mask)
        pos_logit_sum = torch.where(pos_mask, logits, 0.0).sum(dim=1)
        return self._supcon_terms(log_denominator, pos_logit_sum, lmu.count_per_row(pos_mask), mat.dtype)

    def _logits(self, mat):
        logits = mat.to(accumulation_dtype(mat.dtype))
        if not self.distance.is_inverted:
            logits = -logits
        return logits / self.temperature

    @staticmethod
    def _supcon_terms(log_denominator, pos_logit_sum, num_pos, dtype):
        num_pos = num_pos.to(log_denominator.dtype)
        # sum_j (z_ij - lse_i) over positives, divided as in the reference (tiny avoids 0 / 0).
        losses = -(pos_logit_sum - num_pos * log_denominator) / (num_pos + c_f.small_val(dtype))
        return {
            "loss": {
                "losses": losses.to(dtype),
                "indices": torch.arange(len(losses), device=losses.device),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self):
        return AvgNonZeroReducer()

    def get_default_distance(self):
        return CosineSimilarity()
