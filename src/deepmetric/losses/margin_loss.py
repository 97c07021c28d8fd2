"""Margin loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding Learning",
ICCV 2017)."""

import torch

from ..reducers import DivisorReducer
from ..reducers.terms import SeparableTripletTerms
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction


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

    With labels, no miner and all triplets, the triplets go to the reducer unlisted
    (:class:`~deepmetric.reducers.terms.SeparableTripletTerms`): each anchor-positive term occurs
    once per negative of the anchor and each anchor-negative term once per positive, so sums and
    counts come from the ``N x M`` matrix and nothing grows as ``N^3``.
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
        if len(self.beta) > 1 and labels.ndim != 1:
            raise ValueError(
                "MarginLoss with one beta per class (num_classes) picks each anchor's beta by its "
                f"label, so labels must be 1-D class indices, got shape {tuple(labels.shape)}"
            )
        if indices_tuple is None and self.triplets_per_anchor == "all":
            return self.every_triplet_loss(embeddings, labels, ref_emb, ref_labels)
        indices_tuple = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, self.triplets_per_anchor, relation=self.label_relation
        )
        anchor_idx, positive_idx, negative_idx = indices_tuple
        if len(anchor_idx) == 0:
            return self.zero_losses()
        beta = self._beta(labels, anchor_idx, embeddings)
        mat = self.distance(embeddings, ref_emb)
        pos_loss = self.pos_loss(mat[anchor_idx, positive_idx], beta)
        neg_loss = self.neg_loss(mat[anchor_idx, negative_idx], beta)
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

    def every_triplet_loss(self, embeddings, labels, ref_emb, ref_labels):
        """Every (anchor, positive, negative) of the labels, as unlisted terms: each triplet's
        loss is its positive pair's part plus its negative pair's part."""
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        if not lmu.has_any_triplet(pos_mask, neg_mask):
            return self.zero_losses()
        beta = self._beta(labels, slice(None), embeddings).view(-1, 1)
        mat = self.distance(embeddings, ref_emb)
        pos_loss, neg_loss = self.pos_loss(mat, beta), self.neg_loss(mat, beta)
        terms = SeparableTripletTerms(pos_loss, neg_loss, pos_mask, neg_mask, nonnegative=True)
        num_pos, num_neg = lmu.count_per_row(pos_mask), lmu.count_per_row(neg_mask)
        # the number of non-zero positive parts and negative parts over all triplets
        divisor = int(
            torch.sum(lmu.count_per_row((pos_loss > 0) & pos_mask) * num_neg)
            + torch.sum(lmu.count_per_row((neg_loss > 0) & neg_mask) * num_pos)
        )
        reg_loss = self.zero_loss()
        if self.learn_beta and len(self.beta) == 1:
            reg_loss = self.compute_reg_loss(beta.view(-1)[:1], None, divisor)
        elif self.learn_beta:
            # one beta per anchor class, once per triplet of that anchor
            beta_terms, nothing = (beta * self.nu).expand_as(mat), torch.zeros_like(mat)
            reg_terms = SeparableTripletTerms(beta_terms, nothing, pos_mask, neg_mask, "element")
            reg_loss = reg_terms.entry(divisor=divisor)
        return {"margin_loss": terms.entry(divisor=divisor), "beta_reg_loss": reg_loss}

    def pos_loss(self, d_ap, beta):
        return torch.nn.functional.relu(self.distance.margin(d_ap, beta) + self.margin)

    def neg_loss(self, d_an, beta):
        return torch.nn.functional.relu(self.distance.margin(beta, d_an) + self.margin)

    def _beta(self, labels, anchors, embeddings):
        beta = self.beta if len(self.beta) == 1 else self.beta[labels[anchors]]
        return c_f.to_device(beta, device=embeddings.device, dtype=embeddings.dtype)

    def compute_reg_loss(self, beta, anchor_idx, divisor):
        if not self.learn_beta:
            return self.zero_loss()
        loss = beta * self.nu
        if len(self.beta) == 1:
            return {"losses": loss, "indices": None, "reduction_type": "already_reduced"}
        return {"losses": loss, "indices": anchor_idx, "reduction_type": "element", "divisor": divisor}

    def _sub_loss_names(self):
        return ["margin_loss", "beta_reg_loss"]

    def get_default_reducer(self):
        return DivisorReducer()
