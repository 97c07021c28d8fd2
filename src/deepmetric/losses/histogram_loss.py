"""Histogram loss (Ustinova & Lempitsky, "Learning Deep Embeddings with Histogram Loss",
NIPS 2016)."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import SizeArgumentError, require
from .base_metric_loss_function import BaseMetricLossFunction


def filter_pairs(*tensors):
    """Distinct unordered pairs: ``filter_pairs(a, b)`` -> ``[[firsts], [seconds]]``, each pair
    sorted (smaller index first) and the list ordered by (first, second)."""
    stacked, _ = torch.sort(torch.stack(tensors), dim=0)
    return torch.unique(stacked, dim=1).tolist()


class HistogramLoss(BaseMetricLossFunction):
    """Probability that a random negative pair is more similar than a random positive pair,
    estimated from histograms of similarities (default cosine, values in ``[-1, 1]``):

        p+_r, p-_r : linear-interpolation histograms on nodes t_r = -1 + r * delta
        loss = sum_r p-_r * Phi+_r,        Phi+_r = sum_{k <= r} p+_k

    Each value ``v`` puts ``(v + 1 - r delta) / delta`` on node ``r + 1`` and the rest on node
    ``r``, ``r = floor((v + 1) / delta)``. The pairs come from the triplets (all of them from
    the labels, or those of ``indices_tuple``): positives are the distinct unordered
    anchor-positive pairs, negatives the distinct unordered anchor-negative pairs. ``"loss"``:
    already reduced.

    With labels the pair sets are read straight from label masks (upper triangle), never
    listing the O(N^3) triplets.

    Args:
        n_bins: number of bins (``n_bins + 1`` nodes); default 100.
        delta: bin width, ``2 / n_bins``; give either or both (then they must agree).
    """

    def __init__(self, n_bins=None, delta=None, **kwargs):
        super().__init__(**kwargs)
        if delta is not None and n_bins is not None:
            require(
                delta == 2 / n_bins,
                "delta and n_bins must satisfy the equation delta = 2/n_bins.\n"
                f"Passed values are delta={delta} and n_bins={n_bins}",
            )
        if delta is None and n_bins is None:
            n_bins = 100
        require(
            n_bins is None or n_bins > 0, f"HistogramLoss needs n_bins > 0, got {n_bins}", SizeArgumentError
        )
        require(
            delta is None or 0 < delta <= 2,
            f"HistogramLoss needs 0 < delta <= 2, got {delta}",
            SizeArgumentError,
        )
        self.delta = delta if delta is not None else 2 / n_bins
        self.add_to_recordable_attributes(name="delta", is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        if indices_tuple is None:
            pairs = _pair_masks_from_labels(labels, self.label_relation)
        else:
            pairs = _pair_masks_from_tuple(indices_tuple, len(embeddings))
        if pairs is None:
            return self.zero_losses()
        pos_pairs, neg_pairs = pairs
        mat = self.distance(embeddings, ref_emb)
        self._check_range(mat)
        p_pos = self.compute_density(mat[pos_pairs])
        p_neg = self.compute_density(mat[neg_pairs])
        loss = torch.sum(p_neg * torch.cumsum(p_pos, dim=0))
        loss = loss.to(embeddings.dtype)
        return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    def compute_density(self, values):
        """Histogram of ``values`` on the nodes ``-1, -1 + delta, ..., 1``, summing to 1."""
        values = values.to(accumulation_dtype(values.dtype))  # sums over many pairs
        num_nodes = round(1 + 2 / self.delta)
        with torch.no_grad():
            # The last bin is closed: a value of exactly 1 goes to the last node.
            r = torch.floor((values.float() + 1) / self.delta).clamp_(0, num_nodes - 2).long()
        # r * delta with r an integer tensor is in the default dtype (float32), as in the
        # reference: the node positions carry its rounding, so the weights match it bit for bit.
        to_upper = (values + 1 - r * self.delta) / self.delta
        to_lower = ((r + 1) * self.delta - 1 - values) / self.delta
        density = values.new_zeros(num_nodes)
        density = density.scatter_add(0, r + 1, to_upper).scatter_add(0, r, to_lower)
        return density / len(values)

    def _check_range(self, mat):
        tolerance = 1e-2 if mat.dtype in (torch.float16, torch.bfloat16) else 1e-4
        low, high = torch.aminmax(mat.detach())
        if low < -1 - tolerance or high > 1 + tolerance:
            raise ValueError(
                "HistogramLoss needs similarities in [-1, 1] (e.g. CosineSimilarity); "
                f"{type(self.distance).__name__} gave values in [{low.item():.4g}, {high.item():.4g}]"
            )

    def get_default_distance(self):
        return CosineSimilarity()


def _pair_masks_from_labels(labels, relation):
    """Upper-triangular masks of the positive and negative pairs that occur in some triplet."""
    same = lmu.related_labels(labels, labels, relation)
    if relation is not None or labels.ndim != 1:
        same = same.clone().fill_diagonal_(True)  # a row counts itself, as with equal labels
    upper = torch.ones_like(same).triu_(1)
    has_pos = (same.sum(dim=1) > 1)
    # {i, j} with different labels is an anchor-negative pair if either end has a positive.
    neg = ~same & upper & (has_pos.unsqueeze(1) | has_pos.unsqueeze(0))
    if not bool(neg.any()):
        return None
    # A negative pair exists, so there are at least two labels and every same-label pair is an
    # anchor-positive pair of some triplet.
    return same & upper, neg


def _pair_masks_from_tuple(indices_tuple, num_rows):
    """Upper-triangular masks of the distinct unordered pairs of a miner's triplets."""
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        if len(a) == 0:
            return None
        pos, neg = (a, p), (a, n)
    else:
        a1, p, a2, n = indices_tuple
        # A 4-tuple forms triplets from positive and negative pairs sharing an anchor.
        pos_kept = torch.isin(a1, a2)
        neg_kept = torch.isin(a2, a1)
        if not bool(pos_kept.any()):
            return None
        pos, neg = (a1[pos_kept], p[pos_kept]), (a2[neg_kept], n[neg_kept])
    return _upper_mask(*pos, num_rows), _upper_mask(*neg, num_rows)


def _upper_mask(first, second, num_rows):
    mask = torch.zeros(num_rows, num_rows, dtype=torch.bool, device=first.device)
    mask[torch.minimum(first, second), torch.maximum(first, second)] = True
    return mask
