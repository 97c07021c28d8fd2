"""Ranked list loss (Wang et al., "Ranked List Loss for Deep Metric Learning", CVPR 2019,
https://arxiv.org/abs/1903.03238)."""

import warnings

import torch

from ..distances import LpDistance
from ..ops.fused_backward import replayed_gradients, wants_graph_of_gradient
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import require
from .base_metric_loss_function import BaseMetricLossFunction

# Added once per column to each row's weight sum, so rows without violations divide by a
# small positive number instead of zero (the reference's constant).
_WEIGHT_EPS = 1e-5


def _plain_weighted_violation(violation, selected, temperature):
    """``_WeightedViolation`` from plain torch operations (what second derivatives are taken of)."""
    exponent = torch.where(selected, temperature * violation, 0)
    weights = torch.where(selected, torch.exp(exponent), 0)
    denominator = weights.sum(dim=1) + violation.shape[1] * _WEIGHT_EPS
    return (weights * violation).sum(dim=1) / denominator


class _WeightedViolation(torch.autograd.Function):
    """``L_i = sum_j w_ij v_ij / (sum_j w_ij + M * eps)`` with ``w = exp(T v)`` on the selected
    cells of row ``i`` (0 elsewhere), as one autograd node. Its gradient has the closed form
    ``dL_i / dv_ij = w_ij (1 + T (v_ij - L_i)) / (sum_j w_ij + M * eps)``, so the backward pass
    is three passes over the matrix instead of the chain of where/exp/mul/sum nodes."""

    @staticmethod
    def forward(ctx, violation, selected, temperature):
        # The exponent is masked before exp, so an unselected cell can never overflow.
        if temperature == 0:
            weights = selected.to(violation.dtype)
        else:
            weights = torch.where(selected, violation, 0).mul_(temperature).exp_().mul_(selected)
        denominator = weights.sum(dim=1) + violation.shape[1] * _WEIGHT_EPS
        losses = torch.linalg.vecdot(weights, violation, dim=1) / denominator
        ctx.save_for_backward(violation, weights, denominator, losses, selected)
        ctx.temperature = temperature
        return losses

    @staticmethod
    def backward(ctx, grad):
        violation, weights, denominator, losses, selected = ctx.saved_tensors
        if wants_graph_of_gradient():
            inputs = (violation, selected, ctx.temperature)
            return replayed_gradients(_plain_weighted_violation, inputs, grad)
        row_scale = (grad / denominator).unsqueeze(1)
        if ctx.temperature == 0:
            return weights * row_scale, None, None
        slope = (violation - losses.unsqueeze(1)).mul_(ctx.temperature).add_(1)
        return slope.mul_(weights).mul_(row_scale), None, None


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
        pos_mask, neg_mask = lmu.get_label_masks(labels)
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
        return _WeightedViolation.apply(violation, selected, float(temperature))

    def get_default_distance(self):
        return LpDistance()
