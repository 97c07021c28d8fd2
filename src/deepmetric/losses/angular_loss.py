"""Angular loss (Wang, Zhou, Wen, Liu & Lin, "Deep Metric Learning with Angular Loss", ICCV 2017)."""

import math

import torch

from ..distances import LpDistance
from ..ops.blocked_triplets import chunk_bounds
from ..ops.dtypes import accumulation_dtype
from ..ops.pair_row_logsumexp import pair_row_logsumexp
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction


class AngularLoss(BaseMetricLossFunction):
    """Bounds the angle at the negative in the triangle (anchor, positive, negative).

    For a positive pair ``k = (i, j)`` with ``a = x_i / |x_i|``, ``p = r_j / |r_j|`` and
    ``t = tan(alpha)^2``:

        f_kn = 4 t (a + p) . r_n - 2 (1 + t) a . p
        loss_k = log(1 + sum_{n: y'_n != y_i} exp(f_kn))

    where ``n`` runs over every reference row with another label than the anchor (a miner's
    negative pairs are not used, only its positive pairs), and ``r_n`` is the reference row as
    given (not normalised), as in the reference implementation.

    Args:
        alpha: the angle bound, in degrees (stored in radians as ``self.alpha``).

    ``(a + p) . r_n`` is ``a . r_n + p . r_n``, so two matrix products give every term; the
    ``(pairs x references)`` matrix is then reduced one chunk of pairs at a time
    (``ops.pair_row_logsumexp``), which keeps memory at ``O(N M)`` instead of ``O(pairs x M)``.
    """

    def __init__(self, alpha=40, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)
        self.alpha = torch.tensor(math.radians(alpha), dtype=torch.float64)
        self.add_to_recordable_attributes(list_of_names=["alpha"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["average_angle"], is_stat=True)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        if indices_tuple is None:
            # Only the positive pairs are listed; the negatives come from the label mask.
            pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
            a1, p = torch.where(pos_mask)
            has_negatives = bool(neg_mask.any())
        else:
            a1, p, a2, _ = lmu.convert_to_pairs(indices_tuple, labels, ref_labels, self.label_relation)
            has_negatives = len(a2) > 0
            neg_mask = None
        if len(a1) == 0 or not has_negatives:
            return self.zero_losses()
        anchors = self.distance.normalize(embeddings)
        refs = self.distance.normalize(ref_emb)
        # Half precision would overflow in exp(); the pair-by-reference work runs in float32.
        work = accumulation_dtype(embeddings.dtype)
        anchor_ref = (anchors @ ref_emb.t()).to(work)
        ref_ref = (refs @ ref_emb.t()).to(work)
        if 8 * len(a1) < anchors.shape[0] * refs.shape[0]:
            ap_dot = torch.sum(anchors[a1] * refs[p], dim=1).to(work)
        else:  # dense enough that one matrix product beats gathering every pair's rows
            ap_dot = (anchors @ refs.t())[a1, p].to(work)
        sq_tan = float(torch.tan(self.alpha) ** 2)
        # Which references are negatives depends only on the anchor, so the mask is folded into
        # the anchor's row once (as -inf) instead of being rebuilt for every pair.
        if neg_mask is None:
            neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)[1]
        anchor_term = (4 * sq_tan * anchor_ref).masked_fill(~neg_mask, -math.inf)
        losses = pair_row_logsumexp(anchor_term, 4 * sq_tan * ref_ref, 2 * (1 + sq_tan) * ap_dot, a1, p)
        self._set_stats(anchor_ref, ref_ref, ap_dot, a1, p, neg_mask, ref_emb)
        return {
            "loss": {"losses": losses.to(embeddings.dtype), "indices": (a1, p), "reduction_type": "pos_pair"}
        }

    def _set_stats(self, anchor_ref, ref_ref, ap_dot, a1, p, neg_mask, ref_emb):
        """Mean angle at the negative, ``atan(|a - p| / (2 |(a + p)/2 - r_n|))``, in degrees."""
        if not self.collect_stats:
            return
        with torch.no_grad():
            ref_sq_norm = torch.sum(ref_emb.to(anchor_ref.dtype) ** 2, dim=1)
            ap_dist = torch.sqrt(torch.clamp(2 - 2 * ap_dot, min=0))
            center_sq_norm = (2 + 2 * ap_dot) / 4
            total, count = 0.0, 0
            for s, e in chunk_bounds(len(a1), ref_emb.shape[0]):
                center_dot_ref = (anchor_ref[a1[s:e]] + ref_ref[p[s:e]]) / 2
                sq = center_sq_norm[s:e, None] + ref_sq_norm[None] - 2 * center_dot_ref
                angles = torch.atan(ap_dist[s:e, None] / (2 * torch.sqrt(torch.clamp(sq, min=0))))
                keep = neg_mask[a1[s:e]]
                total += float(torch.sum(angles[keep]))
                count += int(torch.count_nonzero(keep))
            self.average_angle = math.degrees(total / count) if count else 0
