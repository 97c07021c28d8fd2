"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020)."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import masked_logsumexp
from ..reducers import AvgNonZeroReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .generic_pair_loss import GenericPairLoss


class SupConLoss(GenericPairLoss):
    """Average log-probability of an anchor's positives under a softmax over all its pairs.

    With ``z_ij = s_ij / t`` (``-d_ij / t`` for a distance) and ``A_i = P_i u N_i``::

        L_i = -1/|P_i| * sum_{j in P_i} ( z_ij - log sum_{k in A_i} exp(z_ik) )

    Anchors without positives give 0 (dropped by the default AvgNonZeroReducer); a batch with no
    positive or no negative pair gives zero.

    Args:
        temperature: ``t``.
    """

    accepts_bool_masks = True

    def __init__(self, temperature=0.1, **kwargs):
        super().__init__(mat_based_loss=True, **kwargs)
        self.temperature = temperature
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        pos_mask, neg_mask = pos_mask.bool(), neg_mask.bool()
        if not (bool(pos_mask.any()) and bool(neg_mask.any())):
            return self.zero_losses()
        logits = mat.to(accumulation_dtype(mat.dtype))
        if not self.distance.is_inverted:
            logits = -logits
        logits = logits / self.temperature
        log_denominator = masked_logsumexp(logits, pos_mask | neg_mask)
        num_pos = lmu.count_per_row(pos_mask).to(logits.dtype)
        pos_logit_sum = torch.where(pos_mask, logits, 0.0).sum(dim=1)
        # sum_j (z_ij - lse_i) over positives, divided as in the reference (tiny avoids 0 / 0).
        losses = -(pos_logit_sum - num_pos * log_denominator) / (num_pos + c_f.small_val(mat.dtype))
        return {
            "loss": {
                "losses": losses.to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self):
        return AvgNonZeroReducer()

    def get_default_distance(self):
        return CosineSimilarity()
