"""Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR 2020), pair-wise form."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import masked_logsumexp
from ..reducers import AvgNonZeroReducer
from ..utils import common_functions as c_f
from .generic_pair_loss import GenericPairLoss


class CircleLoss(GenericPairLoss):
    """Re-weights each similarity by how far it is from its optimum, so that pairs far from it
    get larger gradients.

    For anchor ``i`` with positive similarities ``s_p`` and negative similarities ``s_n``::

        a_p = [1 + m - s_p]+,  a_n = [s_n + m]+          (weights, no gradient)
        L_i = softplus( log sum_p exp(-gamma * a_p * (s_p - (1 - m)))
                      + log sum_n exp( gamma * a_n * (s_n - m)) )

    ``L_i = 0`` when the anchor has no positive or no negative. Requires CosineSimilarity.

    Args:
        m: the relaxation margin (paper: 0.25 for faces and re-id, 0.4 for image retrieval).
        gamma: the scale (paper: 256 faces, 128 re-id, 80 image retrieval).
    """

    accepts_bool_masks = True

    def __init__(self, m=0.4, gamma=80, **kwargs):
        super().__init__(mat_based_loss=True, **kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.m = m
        self.gamma = gamma
        self.soft_plus = torch.nn.Softplus(beta=1)
        self.op = 1 + self.m
        self.on = -self.m
        self.delta_p = 1 - self.m
        self.delta_n = self.m
        self.add_to_recordable_attributes(
            list_of_names=["m", "gamma", "op", "on", "delta_p", "delta_n"], is_stat=False
        )

    def _compute_loss(self, mat, pos_mask, neg_mask):
        pos_mask, neg_mask = pos_mask.bool(), neg_mask.bool()
        sim = mat.to(accumulation_dtype(mat.dtype))
        frozen = sim.detach()
        pos_logits = -self.gamma * torch.relu(self.op - frozen) * (sim - self.delta_p)
        neg_logits = self.gamma * torch.relu(frozen - self.on) * (sim - self.delta_n)
        pos_lse = masked_logsumexp(pos_logits, pos_mask)
        neg_lse = masked_logsumexp(neg_logits, neg_mask)
        has_both = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        losses = torch.where(has_both, self.soft_plus(pos_lse + neg_lse), 0.0)
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
