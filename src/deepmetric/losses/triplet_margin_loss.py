"""Triplet margin loss (Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest
Neighbor Classification", JMLR 2009; Schroff et al., "FaceNet", CVPR 2015)."""

import torch

from ..reducers import AvgNonZeroReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction
from .hinge_triplet_sums import hinge_triplet_sums
from .monotone_float_search import float_to_key, key_to_float, smallest_true
from .reduction_shortcut import plain_reduction_for

# Anchors are processed in blocks of about this many (anchor, positive, negative) cells.
_CELLS_PER_BLOCK = 2**24


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

    With labels, no miner, all triplets and a mean/sum/threshold reducer, the triplets are
    never listed, so memory grows as ``N^2`` rather than ``N^3``, and the result and gradient
    equal the per-triplet computation: the hinge's sums come from bucketing each anchor's
    negatives among its positives (``hinge_triplet_sums``, about ``N x M x P`` comparisons);
    ``smooth_loss`` and thresholds below 0 go through anchor blocks with masks.
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
        reduction = plain_reduction_for(self)
        if (
            indices_tuple is None
            and self.triplets_per_anchor == "all"
            and not self.swap
            and reduction is not None
        ):
            return self._blocked_loss(embeddings, labels, ref_emb, ref_labels, reduction)
        indices_tuple = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor
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
        violation = self.distance.margin(ap_dists, an_dists) + self.margin
        loss = self._per_triplet(violation)
        return {"loss": {"losses": loss, "indices": indices_tuple, "reduction_type": "triplet"}}

    def _per_triplet(self, violation):
        if self.smooth_loss:
            return torch.nn.functional.softplus(violation)
        return torch.nn.functional.relu(violation)

    def _per_triplet_slope(self, violation):
        if self.smooth_loss:
            return torch.sigmoid(violation)
        return (violation > 0).to(violation.dtype)

    def _blocked_loss(self, embeddings, labels, ref_emb, ref_labels, reduction):
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels)
        has_triplet = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        if not bool(has_triplet.any()):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        value, count, coef = self._sum_count_and_coefficients(mat.detach(), pos_mask, neg_mask, reduction)
        if count == 0:
            return self.zero_losses()
        # (coef * mat).sum() has exactly the gradient of the per-triplet sum; its value is
        # swapped for the directly accumulated one.
        surrogate = torch.sum(coef * mat)
        divisor = count if reduction.kind == "mean" else 1
        # (the mean is taken before rounding to the matrix's dtype, as torch.mean does)
        total = (value / divisor).to(mat.dtype) + (surrogate - surrogate.detach()) / divisor
        return {"loss": {"losses": total, "indices": None, "reduction_type": "already_reduced"}}

    def _sum_count_and_coefficients(self, mat, pos_mask, neg_mask, reduction):
        """Sum and count of kept per-triplet losses, and d(sum)/d(mat)."""
        n, m = mat.shape
        acc_dtype = torch.float32 if mat.dtype in (torch.float16, torch.bfloat16) else mat.dtype
        # Positives of each anchor, packed to the left: pos_idx[i, :pos_count[i]].
        pos_count = lmu.count_per_row(pos_mask)
        width = max(int(pos_count.max()), 1)
        pos_idx = torch.argsort((~pos_mask).to(torch.int8), dim=1, stable=True)[:, :width]
        pos_valid = torch.arange(width, device=mat.device).unsqueeze(0) < pos_count.unsqueeze(1)
        sign = -1.0 if self.distance.is_inverted else 1.0
        plain = reduction.low is None and reduction.high is None
        if not self.smooth_loss and (plain or (reduction.low is not None and reduction.low >= 0)):
            # The hinge's argument is v = t_ij + x_ik with t = sign * d_ap + margin and
            # x = -sign * d_an; "kept" is v > 0 (the hinge's active part) or low < v < high
            # for a threshold, decided on x against exact per-positive bounds.
            ap = mat.gather(1, pos_idx)
            lower, upper = self._negative_bounds(ap, reduction)
            x = -sign * mat.to(acc_dtype)
            t = sign * ap.to(torch.float64) + self.margin
            value, active, grad_t, grad_x = hinge_triplet_sums(
                t, lower.to(acc_dtype), None if upper is None else upper.to(acc_dtype),
                pos_valid, x, neg_mask, x_values=x.to(torch.float64),
            )
            if reduction.low is None:
                # plain sum/mean: every triplet counts, the inactive ones as zeros
                active = int((pos_count * lmu.count_per_row(neg_mask)).sum())
            coef = (-sign * grad_x).to(mat.dtype)
            coef.scatter_add_(1, pos_idx, (sign * grad_t).to(mat.dtype))
            return value, active, coef
        coef = torch.zeros_like(mat)
        value = torch.zeros((), dtype=acc_dtype, device=mat.device)
        count = 0
        block = max(1, _CELLS_PER_BLOCK // (width * m))
        for s in range(0, n, block):
            e = min(s + block, n)
            rows = mat[s:e]
            ap = rows.gather(1, pos_idx[s:e])
            violation = sign * (ap.unsqueeze(2) - rows.unsqueeze(1)) + self.margin
            valid = pos_valid[s:e].unsqueeze(2) & neg_mask[s:e].unsqueeze(1)
            losses = self._per_triplet(violation)
            kept = reduction.keep(losses)
            kept = valid if kept is None else kept & valid
            value += torch.sum(torch.where(kept, losses, 0).to(acc_dtype))
            count += int(torch.count_nonzero(kept))
            slope = torch.where(kept, self._per_triplet_slope(violation), 0)
            coef[s:e].scatter_add_(1, pos_idx[s:e], sign * slope.sum(dim=2))
            coef[s:e] -= sign * slope.sum(dim=1)
        return value, count, coef

    def _negative_bounds(self, ap, reduction):
        """Per (anchor, positive): exclusive bounds ``(lower, upper)`` on ``x = -sign * d_an``
        such that a triplet is kept exactly when ``lower < x < upper`` (``upper`` None: no
        bound). The test is the per-triplet one, ``low < relu(margin(d_ap, d_an) + margin) <
        high`` in the matrix's dtype (low 0 for the hinge's active part), so decisions on terms
        within rounding of a bound are the same bit for bit."""
        sign = -1.0 if self.distance.is_inverted else 1.0
        low = 0 if reduction.low is None else reduction.low
        guess = (-sign * ap.to(torch.float64) - self.margin).to(ap.dtype)
        # a few roundings of numbers of this size: brackets the bound unless it is near zero
        slack = 16 * torch.finfo(ap.dtype).eps * (ap.abs() + abs(self.margin) + abs(low) + 1)

        def hinge(x):
            return self._per_triplet(self.distance.margin(ap, -sign * x) + self.margin)

        # smallest x kept by low, minus one step: the exclusive bound
        first_kept = smallest_true(lambda x: hinge(x) > low, guess + low, slack)
        lower = key_to_float(float_to_key(first_kept) - 1, ap.dtype)
        upper = None
        if reduction.high is not None:
            upper = smallest_true(lambda x: ~(hinge(x) < reduction.high), guess + reduction.high, slack)
        return lower, upper

    def get_default_reducer(self):
        return AvgNonZeroReducer()
