"""Dynamic soft margin loss (Zhang & Rusinkiewicz, "Learning Local Descriptors With a CDF-Based
Dynamic Soft Margin", ICCV 2019)."""

import math

import torch

from ..distances import LpDistance
from ..ops.blocked_triplets import reduce_triplets
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import SizeArgumentError, require
from .base_metric_loss_function import BaseMetricLossFunction


def find_hard_negatives(dmat):
    """``(pos, neg)`` of a square matrix of (anchor i, positive i) distances: ``pos`` is the
    diagonal, ``neg[i]`` the smallest off-diagonal entry of row i or column i. The diagonal of
    ``dmat`` is overwritten with +inf (in place).
    """
    pos = dmat.diag()
    dmat.fill_diagonal_(math.inf)
    return pos, torch.min(torch.min(dmat, dim=0)[0], torch.min(dmat, dim=1)[0])


class DynamicSoftMarginLoss(BaseMetricLossFunction):
    """``loss = mean_t CDF(v_t) * v_t`` with ``v_t = d_ap - d_an`` for every tuple ``t``.

    ``CDF`` is the cumulative distribution of a running histogram of ``v`` over ``num_bins``
    bins covering ``[min_val, -min_val]`` (bin width ``delta = 2 |min_val| / num_bins``). Every
    call updates it with linear interpolation between neighbouring bins:
    ``hist <- (1 - momentum) hist + momentum * new``, then normalised (the first call uses
    momentum 1). Tuples that are already well separated (small ``v``) get a small weight, so
    the effective margin adapts to the current distribution instead of being fixed.

    Tuples: with labels, every triplet (or the miner's triplets); without labels, embedding
    ``i`` and reference ``i`` form a positive pair whose hardest negative is the smallest
    off-diagonal distance in row ``i`` or column ``i`` (the paper's setting of matched
    descriptor pairs).

    Requires ``LpDistance(normalize_embeddings=True, p=2)`` (the default). The histogram
    ``hist_`` is plain state (not in ``state_dict``). With labels, no miner, all triplets are
    reduced per bin in blocks of triplets, so memory grows as ``N^2``, not ``N^3``.

    Args:
        min_val: lower end of the histogram range (the upper end is ``-min_val``).
        num_bins: number of histogram bins (at least 2).
        momentum: weight of the current batch in the running histogram.
    """

    def __init__(self, min_val=-2.0, num_bins=10, momentum=0.01, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, normalize_embeddings=True, p=2)
        require(
            int(num_bins) >= 2,
            f"DynamicSoftMarginLoss: num_bins must be at least 2, got {num_bins}",
            SizeArgumentError,
        )
        require(
            min_val != 0, "DynamicSoftMarginLoss: min_val must be non-zero (the range is [min_val, -min_val])"
        )
        self.min_val = min_val
        self.num_bins = int(num_bins)
        self.delta = 2 * abs(min_val) / num_bins
        self.momentum = momentum
        self.hist_ = torch.zeros((self.num_bins,))
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.hist_ = c_f.to_device(self.hist_, tensor=embeddings, dtype=embeddings.dtype)
        if labels is None:
            values = self._values_without_labels(embeddings, ref_emb)
        elif indices_tuple is None:
            return self._every_triplet_loss(embeddings, labels, ref_emb, ref_labels)
        else:
            a, p, n = lmu.convert_to_triplets(
                indices_tuple, labels, ref_labels, t_per_anchor="all", relation=self.label_relation
            )
            mat = self.distance(embeddings, ref_emb)
            values = mat[a, p] - mat[a, n]
        if len(values) == 0:
            return self.zero_losses()
        loss = self._weighted_mean(values)
        return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    def _values_without_labels(self, embeddings, ref_emb):
        mat = self.distance(embeddings, ref_emb)
        rows, cols = mat.shape
        if rows == 1 and cols == 1:
            # The only pair has no negative at all: nothing to compare.
            return mat.new_zeros(0)
        size = max(rows, cols)
        diagonal = torch.eye(rows, cols, dtype=torch.bool, device=mat.device)
        d_pos = torch.zeros(size, dtype=mat.dtype, device=mat.device)
        d_pos[: min(rows, cols)] = mat.diagonal()
        off_diagonal = mat.masked_fill(diagonal, math.inf)
        # Missing rows / columns count as 0, as in the reference.
        col_min = torch.zeros(size, dtype=mat.dtype, device=mat.device)
        row_min = torch.zeros(size, dtype=mat.dtype, device=mat.device)
        col_min[:cols] = off_diagonal.min(dim=0)[0]
        row_min[:rows] = off_diagonal.min(dim=1)[0]
        return d_pos - torch.min(col_min, row_min)

    def _bins(self, values):
        """Position ``t`` on the bin axis (clamped), lower bin ``b``, fraction ``f``, CDF index."""
        t = ((values - self.min_val) / self.delta).clamp(0, self.num_bins - 1)
        floor = torch.floor(t).detach()
        lower = floor.clamp(max=self.num_bins - 2)
        return t, lower.long(), t - lower, floor.long()

    def _momentum(self):
        return self.momentum if bool(self.hist_.sum() != 0) else 1.0

    def _updated_histogram(self, hist, dtype):
        """``hist`` normalised, stored (without a graph: a second backward must not reach this
        batch) and returned."""
        hist = hist / hist.sum()
        self.hist_ = hist.detach().to(dtype)
        return hist

    def _weighted_mean(self, values):
        dtype = values.dtype
        values = values.to(accumulation_dtype(dtype))
        _, lower, fraction, cdf_idx = self._bins(values)
        momentum = self._momentum()
        hist = (1.0 - momentum) * self.hist_.to(values.dtype)
        hist = hist.scatter_add(0, lower, momentum * (1 - fraction))
        hist = hist.scatter_add(0, lower + 1, momentum * fraction)
        cdf = torch.cumsum(self._updated_histogram(hist, dtype), 0)
        return torch.mean(cdf[cdf_idx] * values).to(dtype)

    def _every_triplet_loss(self, embeddings, labels, ref_emb, ref_labels):
        """The loss over every triplet of the labels, never listed: the histogram update and the
        loss depend on the triplets only through per-bin sums, which are summed in blocks."""
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        if not lmu.has_any_triplet(pos_mask, neg_mask):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        dtype = accumulation_dtype(mat.dtype)
        nb = self.num_bins

        def per_bin_sums(ap, an, valid, anchors):
            values = (ap[0] - an[0]).to(dtype)
            _, lower, fraction, cdf_idx = self._bins(values)
            kept = valid.to(dtype)  # weights of 0 rather than a filter: compacting costs more
            sums = torch.zeros(2 * nb, dtype=dtype, device=values.device)  # mass, then value sums
            sums = sums.index_add(0, lower.flatten(), ((1 - fraction) * kept).flatten())
            sums = sums.index_add(0, (lower + 1).flatten(), (fraction * kept).flatten())
            sums = sums.index_add(0, (cdf_idx + nb).flatten(), (values * kept).flatten())
            return sums, int(torch.count_nonzero(valid))

        sums, count = reduce_triplets(per_bin_sums, pos_mask, neg_mask, mat)
        mass, value_sums = sums[:nb], sums[nb:]
        momentum = self._momentum()
        hist = self._updated_histogram((1.0 - momentum) * self.hist_.to(dtype) + momentum * mass, mat.dtype)
        loss = torch.sum(torch.cumsum(hist, 0) * value_sums) / count
        return {"loss": {"losses": loss.to(mat.dtype), "indices": None, "reduction_type": "already_reduced"}}
