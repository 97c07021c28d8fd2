"""Multi-similarity loss (Wang et al., "Multi-Similarity Loss with General Pair Weighting for
Deep Metric Learning", CVPR 2019)."""

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import masked_logsumexp
from ..utils import common_functions as c_f
from .generic_pair_loss import GenericPairLoss


class MultiSimilarityLoss(GenericPairLoss):
    """Soft-weights every positive and negative pair of an anchor by its similarity.

    For anchor ``i`` with positives ``P_i`` and negatives ``N_i`` (similarities ``s``)::

        L_i = 1/alpha * log(1 + sum_{j in P_i} exp(-alpha * (s_ij - base)))
            + 1/beta  * log(1 + sum_{k in N_i} exp( beta * (s_ik - base)))

    With a distance instead of a similarity the signs flip (``d - base`` for positives,
    ``base - d`` for negatives). An empty set contributes 0; the result is one value per anchor.

    Args:
        alpha: the exponential weight of positive pairs.
        beta: the exponential weight of negative pairs.
        base: the similarity at which a pair is neither pulled nor pushed.
    """

    accepts_bool_masks = True

    def __init__(self, alpha=2, beta=50, base=0.5, **kwargs):
        super().__init__(mat_based_loss=True, **kwargs)
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.add_to_recordable_attributes(list_of_names=["alpha", "beta", "base"], is_stat=False)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        work = mat.to(accumulation_dtype(mat.dtype))
        pos_term = masked_logsumexp(
            self.alpha * self.distance.margin(work, self.base), pos_mask.bool(), add_one=True
        )
        neg_term = masked_logsumexp(
            self.beta * self.distance.margin(self.base, work), neg_mask.bool(), add_one=True
        )
        losses = pos_term / self.alpha + neg_term / self.beta
        return {
            "loss": {
                "losses": losses.to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def get_default_distance(self):
        return CosineSimilarity()
