"""Ranked list loss (Wang et al., "Ranked List Loss for Deep Metric Learning", CVPR 2019,
https://arxiv.org/abs/1903.03238)."""

import warnings

from ..distances import LpDistance
from ..ops.weighted_violation import weighted_violation
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import require
from .base_metric_loss_function import BaseMetricLossFunction


class RankedListLoss(BaseMetricLossFunction):
    """Per anchor ``i`` (``d`` = distance matrix, ``b = alpha - margin``):

    * positives ``j != i`` with ``d_ij > b`` get weight ``w = exp(Tp * (d_ij - b))``;
      ``L_P(i) = sum w * (d_ij - b) / (sum w + N * 1e-5)``;
    * negatives with ``0 < d_ij < alpha`` get weight ``w = exp(Tn * (alpha - d_ij))``;
      ``L_N(i) = sum w * (alpha - d_ij) / (sum w + N * 1e-5)``;
    * ``L_i = (1 - imbalance) * L_P(i) + imbalance * L_N(i)``, one element per row.

    Positives are pulled inside a ball of radius ``alpha - margin``, negatives pushed beyond
    ``alpha``. Only cells with ``d_ij > 0`` are counted (duplicates of the anchor are ignored).

    Args:
        margin: gap between the positive ball and the negative boundary.
        Tn: temperature of the negative weights (0 = uniform weights).
        imbalance: weight of the negative part, in ``[0, 1]``.
        alpha: the negative boundary; default ``1 + margin / 2``.
        Tp: temperature of the positive weights (0 = uniform, the paper's "RLL-Simpler").
    """

    def __init__(self, margin, Tn, imbalance=0.5, alpha=None, Tp=0, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin
        require(
            0 <= imbalance <= 1, f"RankedListLoss: imbalance must be between 0 and 1, got {imbalance}"
        )
        self.imbalance = imbalance
        self.alpha = alpha if alpha is not None else 1 + margin / 2
        if Tp > 5 or Tn > 5:
            warnings.warn(
                f"RankedListLoss: Tp={Tp} or Tn={Tn} is large; exp(T * violation) may overflow",
                stacklevel=2,
            )
        self.Tp = Tp
        self.Tn = Tn
        self.add_to_recordable_attributes(
            list_of_names=["imbalance", "alpha", "margin", "Tp", "Tn"], is_stat=False
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        c_f.indices_tuple_not_supported(indices_tuple)
        mat = self.distance(embeddings, embeddings)
        pos_mask, neg_mask = lmu.get_label_masks(labels, relation=self.label_relation)
        pos_boundary = self.alpha - self.margin
        positive = mat > 0
        pos_selected = pos_mask & positive & (mat > pos_boundary)
        neg_selected = neg_mask & positive & (mat < self.alpha)
        loss_p = self._weighted_violation(mat - pos_boundary, pos_selected, self.Tp)
        loss_n = self._weighted_violation(self.alpha - mat, neg_selected, self.Tn)
        losses = (1 - self.imbalance) * loss_p + self.imbalance * loss_n
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(losses),
                "reduction_type": "element",
            }
        }

    @staticmethod
    def _weighted_violation(violation, selected, temperature):
        """Row-wise ``sum w * v / (sum w + M * eps)`` with ``w = exp(T * v)`` on selected cells."""
        return weighted_violation(violation, selected, float(temperature))

    def get_default_distance(self):
        return LpDistance()
