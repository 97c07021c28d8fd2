"""Triplet margin loss (Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest
Neighbor Classification", JMLR 2009; Schroff et al., "FaceNet", CVPR 2015)."""

import torch

from ..reducers import AvgNonZeroReducer
from ..reducers.terms import HingeTripletTerms, TripletTerms
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction


class TripletMarginLoss(BaseMetricLossFunction):
    """``loss_t = [margin(d_ap, d_an) + margin]+`` for every triplet (anchor, positive, negative).

    ``margin(x, y)`` is ``x - y`` for distances and ``y - x`` for similarities, so with
    ``CosineSimilarity`` the loss is ``[s_an - s_ap + margin]+``.

    Args:
        margin: the desired gap between positive and negative distances.
        swap: use the smaller of anchor-negative and positive-negative distance
            (Balntas et al., BMVC 2016).
        smooth_loss: ``softplus`` instead of the hinge.
        triplets_per_anchor: ``"all"``, or a number of random triplets per anchor.

    With labels, no miner and all triplets, the triplets go to the reducer unlisted
    (:class:`~deepmetric.reducers.terms.TripletTerms`): memory grows as ``N^2``, not ``N^3``.
    """

    def __init__(
        self, margin=0.05, swap=False, smooth_loss=False, triplets_per_anchor="all", **kwargs
    ):
        super().__init__(**kwargs)
        self.margin = margin
        self.swap = swap
        self.smooth_loss = smooth_loss
        self.triplets_per_anchor = triplets_per_anchor
        self.add_to_recordable_attributes(name="margin", is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        if indices_tuple is None and self.triplets_per_anchor == "all" and not self.swap:
            return self.every_triplet_loss(embeddings, labels, ref_emb, ref_labels)
        indices_tuple = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor,
            relation=self.label_relation,
        )
        anchor_idx, positive_idx, negative_idx = indices_tuple
        if len(anchor_idx) == 0:
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        ap_dists = mat[anchor_idx, positive_idx]
        an_dists = mat[anchor_idx, negative_idx]
        if self.swap:
            pn_dists = mat[positive_idx, negative_idx]
            an_dists = self.distance.smallest_dist(an_dists, pn_dists)
        loss = self.per_triplet_loss(ap_dists, an_dists)
        return {"loss": {"losses": loss, "indices": indices_tuple, "reduction_type": "triplet"}}

    def every_triplet_loss(self, embeddings, labels, ref_emb, ref_labels):
        """The loss of every (anchor, positive, negative) of the labels, as unlisted terms."""
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        if not lmu.has_any_triplet(pos_mask, neg_mask):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        per_triplet = lambda ap, an, anchors: self.per_triplet_loss(ap[0], an[0])  # noqa: E731
        if self.smooth_loss:
            terms = TripletTerms((mat,), pos_mask, neg_mask, per_triplet)
        else:
            inverted = self.distance.is_inverted
            terms = HingeTripletTerms(mat, pos_mask, neg_mask, per_triplet, inverted, self.margin)
        return {"loss": terms.entry()}

    def per_triplet_loss(self, ap_dists, an_dists):
        violation = self.distance.margin(ap_dists, an_dists) + self.margin
        if self.smooth_loss:
            return torch.nn.functional.softplus(violation)
        return torch.nn.functional.relu(violation)

    def get_default_reducer(self):
        return AvgNonZeroReducer()
