"""Margin loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding Learning",
ICCV 2017)."""

import torch

from ..reducers import DivisorReducer, MeanReducer, MultipleReducers, SumReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction

# Reducers whose result on the per-triplet losses follows from their sum, their count and the
# number of non-zero terms; for these the triplets are never listed.
_DENSE_REDUCERS = (DivisorReducer, MeanReducer, SumReducer)


class MarginLoss(BaseMetricLossFunction):
    """Positives within ``beta - margin`` of the anchor, negatives beyond ``beta + margin``.

    For every triplet ``t = (a, p, n)`` and the boundary ``beta_t`` (one value, or one per
    anchor class):

        pos_t = [d_ap - beta_t + margin]+        neg_t = [beta_t - d_an + margin]+

    (for a similarity: ``[beta_t - s_ap + margin]+`` and ``[s_an - beta_t + margin]+``).
    ``margin_loss`` holds ``pos_t + neg_t``; the default reducer divides their sum by the number
    of non-zero ``pos_t`` and ``neg_t`` terms. With ``learn_beta`` the boundary is a parameter
    and ``beta_reg_loss = nu * beta`` pushes it (as in the paper) towards small values.

    Args:
        margin: the half-width ``alpha`` of the band around ``beta``.
        nu: weight of the regularization of a learned ``beta``.
        beta: initial boundary between positive and negative distances.
        triplets_per_anchor: ``"all"``, or a number of random triplets per anchor.
        learn_beta: make ``beta`` an ``nn.Parameter`` (``state_dict`` key ``beta``).
        num_classes: if given, one ``beta`` per class, chosen by the anchor's label.

    With labels, no miner, all triplets and a divisor/mean/sum reducer, the triplet sums are
    computed from the ``N x M`` matrix: each anchor-positive term occurs once per negative of the
    anchor and each anchor-negative term once per positive, so nothing grows as ``N^3``.
    """

    def __init__(
        self,
        margin=0.2,
        nu=0,
        beta=1.2,
        triplets_per_anchor="all",
        learn_beta=False,
        num_classes=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.margin = margin
        self.nu = nu
        self.learn_beta = learn_beta
        self.initialize_beta(beta, num_classes)
        self.triplets_per_anchor = triplets_per_anchor
        self.add_to_recordable_attributes(list_of_names=["margin", "nu", "beta"], is_stat=False)

    def initialize_beta(self, beta, num_classes):
        values = torch.tensor([float(beta)])
        if num_classes:
            values = torch.ones(num_classes) * values
        self.beta = torch.nn.Parameter(values) if self.learn_beta else values

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        if len(self.beta) > 1 and labels is None:
            raise ValueError(
                "MarginLoss with one beta per class (num_classes) needs labels to pick each "
                "anchor's beta; got indices_tuple without labels"
            )
        if indices_tuple is None and self.triplets_per_anchor == "all" and self._dense_reducers():
            return self._dense_loss(embeddings, labels, ref_emb, ref_labels)
        indices_tuple = lmu.convert_to_triplets(indices_tuple, labels, ref_labels, self.triplets_per_anchor)
        anchor_idx, positive_idx, negative_idx = indices_tuple
        if len(anchor_idx) == 0:
            return self.zero_losses()
        beta = self.beta if len(self.beta) == 1 else self.beta[labels[anchor_idx]]
        beta = c_f.to_device(beta, device=embeddings.device, dtype=embeddings.dtype)
        mat = self.distance(embeddings, ref_emb)
        pos_loss, neg_loss = self._pos_neg(mat[anchor_idx, positive_idx], mat[anchor_idx, negative_idx], beta)
        divisor = torch.sum(pos_loss > 0) + torch.sum(neg_loss > 0)
        return {
            "margin_loss": {
                "losses": pos_loss + neg_loss,
                "indices": indices_tuple,
                "reduction_type": "triplet",
                "divisor": divisor,
            },
            "beta_reg_loss": self.compute_reg_loss(beta, anchor_idx, divisor),
        }

    def _pos_neg(self, ap, an, beta):
        relu = torch.nn.functional.relu
        pos = relu(self.distance.margin(ap, beta) + self.margin)
        return pos, relu(self.distance.margin(beta, an) + self.margin)

    def compute_reg_loss(self, beta, anchor_idx, divisor):
        if not self.learn_beta:
            return self.zero_loss()
        loss = beta * self.nu
        if len(self.beta) == 1:
            return {"losses": loss, "indices": None, "reduction_type": "already_reduced"}
        return {"losses": loss, "indices": anchor_idx, "reduction_type": "element", "divisor": divisor}

    def _sub_reducer(self, name):
        reducer = self.reducer
        if isinstance(reducer, MultipleReducers):
            if reducer.collect_stats:
                return None
            reducer = reducer.reducers[name] if name in reducer.reducers else reducer.default_reducer
        return reducer

    def _dense_reducers(self):
        """True when every sub-loss reducer is one the dense path reproduces exactly."""
        names = ["margin_loss"] + (["beta_reg_loss"] if self.learn_beta and len(self.beta) > 1 else [])
        for name in names:
            reducer = self._sub_reducer(name)
            if reducer is None or type(reducer) not in _DENSE_REDUCERS or reducer.collect_stats:
                return False
        return True

    def _dense_loss(self, embeddings, labels, ref_emb, ref_labels):
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels)
        num_pos, num_neg = lmu.count_per_row(pos_mask), lmu.count_per_row(neg_mask)
        triplets_per_anchor = num_pos * num_neg
        num_triplets = int(triplets_per_anchor.sum())
        if num_triplets == 0:
            return self.zero_losses()
        beta = self.beta if len(self.beta) == 1 else self.beta[labels]
        beta = c_f.to_device(beta, device=embeddings.device, dtype=embeddings.dtype)
        mat = self.distance(embeddings, ref_emb)
        pos_loss, neg_loss = self._pos_neg(mat, mat, beta.view(-1, 1))
        # Half-precision sums of up to N^3 terms overflow; accumulate in float32.
        acc = torch.float32 if mat.dtype in (torch.float16, torch.bfloat16) else mat.dtype
        # Each (a, p) term appears once per negative of a, each (a, n) term once per positive:
        # sum each anchor's row, then weight the row sums.
        pos_rows = torch.where(pos_mask, pos_loss.to(acc), 0).sum(dim=1)
        neg_rows = torch.where(neg_mask, neg_loss.to(acc), 0).sum(dim=1)
        total = torch.sum(pos_rows * num_neg.to(acc)) + torch.sum(neg_rows * num_pos.to(acc))
        # Counts in integers: the number of triplets exceeds float32's exact range.
        divisor = int(
            torch.sum(lmu.count_per_row((pos_loss > 0) & pos_mask) * num_neg)
            + torch.sum(lmu.count_per_row((neg_loss > 0) & neg_mask) * num_pos)
        )
        loss_dict = {"margin_loss": self._reduced(total, "margin_loss", num_triplets, divisor, mat.dtype)}
        if not self.learn_beta:
            loss_dict["beta_reg_loss"] = self.zero_loss()
        elif len(self.beta) == 1:
            loss_dict["beta_reg_loss"] = self.compute_reg_loss(beta, None, divisor)
        else:
            reg_total = torch.sum(beta.to(acc) * self.nu * triplets_per_anchor.to(acc))
            loss_dict["beta_reg_loss"] = self._reduced(
                reg_total, "beta_reg_loss", num_triplets, divisor, mat.dtype
            )
        return loss_dict

    def _reduced(self, total, name, num_triplets, divisor, dtype):
        kind = type(self._sub_reducer(name))
        if kind is DivisorReducer:
            if divisor == 0:
                return self.zero_loss()
            total = total / divisor
        elif kind is MeanReducer:
            total = total / num_triplets
        return {"losses": total.to(dtype), "indices": None, "reduction_type": "already_reduced"}

    def _sub_loss_names(self):
        return ["margin_loss", "beta_reg_loss"]

    def get_default_reducer(self):
        return DivisorReducer()
