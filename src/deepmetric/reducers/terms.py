"""Per-element loss terms, as a loss hands them to its reducer.

A loss-dict entry ``{"losses": ..., "indices": ..., "reduction_type": ...}`` holds one term per
element, pair or triplet. The reference library always lists them: a tensor of values with their
indices. For a dense batch (labels and no miner) that list has ``N x M`` pairs or
``N x P x M`` triplets, so a loss may instead put a lazy :class:`Terms` object in ``"losses"``:
it knows the matrix, the masks and the per-term formula, and can

- ``materialize()`` into exactly the listed values and indices the reference builds (same
  values, same order), and
- answer ``kept_sum(low, high)``: the sum and the number of the terms strictly inside
  ``(low, high)`` (either bound may be ``None``), computed from the matrices without listing.

A reducer method marked :func:`reduces_terms` receives a :class:`Terms` (listed values are
wrapped in :class:`ListedTerms`) and reduces through that interface; any other reducer method
(every user reducer) receives the listed tensors, as in the reference. Both routes decide the
same kept set: each term is computed with the same arithmetic in both.
"""

import torch

from ..ops.blocked_triplets import reduce_triplets, select_triplets
from ..ops.dtypes import accumulation_dtype, pos_inf
from ..ops.hinge_triplet_sums import hinge_triplet_sums
from ..ops.masks import count_per_row


def reduces_terms(method):
    """Mark a reducer's ``<type>_reduction`` method as taking :class:`Terms` instead of tensors."""
    method.reduces_terms = True
    return method


def within(values, low=None, high=None):
    """Boolean mask of ``low < values < high`` (``None`` for no bound), or ``None`` for no bound at all."""
    keep = None
    if low is not None:
        keep = values > low
    if high is not None:
        below = values < high
        keep = below if keep is None else keep & below
    return keep


def materialized(loss_dict):
    """The loss dict with every lazy entry listed, as the reference would have built it (the
    same dict object when nothing is lazy)."""
    if not any(_is_lazy(entry) for entry in loss_dict.values()):
        return loss_dict
    return {name: materialized_entry(entry) for name, entry in loss_dict.items()}


def materialized_entry(entry):
    """One loss-dict entry with lazy terms listed (the entry itself otherwise)."""
    if not _is_lazy(entry):
        return entry
    losses, indices = entry["losses"].materialize()
    return {**entry, "losses": losses, "indices": indices}


def _is_lazy(entry):
    return isinstance(entry, dict) and isinstance(entry.get("losses"), Terms)


class Terms:
    """Per-element terms not (yet) listed. Subclasses define ``dtype``, ``reduction_type`` and
    the methods below (``kept_sum`` falls back to listing)."""

    reduction_type = None
    dtype = None

    def __len__(self):
        """The number of terms."""
        raise NotImplementedError

    def materialize(self):
        """``(losses, indices)`` exactly as the reference lists them."""
        raise NotImplementedError

    def kept_sum(self, low=None, high=None):
        """``(sum, count)`` of the terms with ``low < term < high``. The sum keeps the graph and
        is in the accumulation dtype (float32 for half-precision terms); the count is an int."""
        losses, _ = self.materialize()
        return ListedTerms(losses, None, self.reduction_type).kept_sum(low, high)

    def count(self, low=None, high=None):
        """The number of terms with ``low < term < high`` (no graph)."""
        with torch.no_grad():
            return self.kept_sum(low, high)[1]

    def entry(self, **extra):
        """A loss-dict entry holding these terms."""
        return {"losses": self, "indices": None, "reduction_type": self.reduction_type, **extra}


class ListedTerms(Terms):
    """Terms that are already listed (the reference's form): reduced with the reference's
    arithmetic (boolean selection, then a sum)."""

    def __init__(self, losses, indices, reduction_type):
        self.losses, self.indices, self.reduction_type = losses, indices, reduction_type
        self.dtype = losses.dtype

    def __len__(self):
        return len(self.losses)

    def materialize(self):
        return self.losses, self.indices

    def kept_sum(self, low=None, high=None):
        keep = within(self.losses, low, high)
        kept = self.losses if keep is None else self.losses[keep]
        total = torch.sum(kept.to(accumulation_dtype(kept.dtype)))
        return total, len(kept)

    def pair_matrix(self, num_rows, num_cols):
        """``(matrix, count per row)``: each pair's loss at its (anchor, other) cell and 0 in
        the cells of no pair; columns cover the largest listed index too."""
        anchors, others = self.indices
        num_cols = num_cols if len(others) == 0 else max(num_cols, int(others.max()) + 1)
        # Cells of no pair are marked with the largest finite value, as in the reference.
        fill = pos_inf(self.losses.dtype)
        matrix = torch.full((num_rows, num_cols), fill, dtype=self.losses.dtype, device=self.losses.device)
        matrix = matrix.index_put((anchors, others), self.losses)
        missing = matrix == fill
        return matrix.masked_fill(missing, 0), num_cols - count_per_row(missing)


class PairTerms(Terms):
    """One term per cell of a boolean ``mask`` ``(N, M)``: ``values[i, j]`` for the pair
    ``(i, j)``. ``values`` is the per-pair formula applied to the whole matrix (elementwise, so
    each listed value is bit for bit what the formula gives on the listed pair). Listed in
    ``torch.where`` (row-major) order, the order of ``lmu.get_all_pairs_indices``."""

    def __init__(self, values, mask, reduction_type):
        self.values, self.mask, self.reduction_type = values, mask, reduction_type
        self.dtype = values.dtype

    def __len__(self):
        return int(torch.count_nonzero(self.mask))

    def materialize(self):
        rows, cols = torch.where(self.mask)
        return self.values[rows, cols], (rows, cols)

    def kept_sum(self, low=None, high=None):
        keep = within(self.values, low, high)
        keep = self.mask if keep is None else keep & self.mask
        work = self.values.to(accumulation_dtype(self.values.dtype))
        total = torch.sum(torch.where(keep, work, torch.zeros((), dtype=work.dtype, device=work.device)))
        return total, int(torch.count_nonzero(keep))

    def pair_matrix(self, num_rows, num_cols):
        zero = torch.zeros((), dtype=self.values.dtype, device=self.values.device)
        return torch.where(self.mask, self.values, zero), count_per_row(self.mask)


class TripletTerms(Terms):
    """One term per triplet ``(a, p, n)`` with ``pos_mask[a, p]`` and ``neg_mask[a, n]``:

        term = per_triplet(ap, an, a)

    where ``ap`` / ``an`` list, for each of ``matrices`` ``(N, M)``, its value at ``(a, p)`` /
    ``(a, n)``. ``per_triplet`` must be elementwise (broadcasting): it is evaluated on chunks of
    ``(pairs, 1)`` against ``(pairs, M)`` when reducing and on the listed triplets when
    materialising, with the same arithmetic. Listed in ``(a, p, n)`` ascending order, the order of
    ``lmu.get_all_triplets_indices``; ``reduction_type="element"`` lists the anchors as indices.
    """

    def __init__(self, matrices, pos_mask, neg_mask, per_triplet, reduction_type="triplet"):
        self.matrices, self.pos_mask, self.neg_mask = tuple(matrices), pos_mask, neg_mask
        self.per_triplet, self.reduction_type = per_triplet, reduction_type
        self.dtype = self.matrices[0].dtype

    def __len__(self):
        return int(torch.sum(count_per_row(self.pos_mask) * count_per_row(self.neg_mask)))

    def materialize(self):
        a, p, n = select_triplets(self.pos_mask, self.neg_mask, lambda a, p: self.neg_mask[a])
        aps = [m[a, p] for m in self.matrices]
        ans = [m[a, n] for m in self.matrices]
        losses = self.per_triplet(aps, ans, a)
        return losses, (a if self.reduction_type == "element" else (a, p, n))

    def kept_sum(self, low=None, high=None):
        dtype = accumulation_dtype(self.matrices[0].dtype)

        def reduce_chunk(ap, an, valid, a):
            values = self.per_triplet(ap, an, a.unsqueeze(1))
            keep = within(values, low, high)
            keep = valid if keep is None else keep & valid
            zero = torch.zeros((), dtype=dtype, device=values.device)
            return torch.sum(torch.where(keep, values.to(dtype), zero)), int(torch.count_nonzero(keep))

        return reduce_triplets(reduce_chunk, self.pos_mask, self.neg_mask, *self.matrices)


class HingeTripletTerms(TripletTerms):
    """Triplet terms whose ``per_triplet(ap, an, a)`` is the hinge
    ``[margin(ap[0], an[0]) + margin]_+`` on the one matrix ``mat``, where ``margin(x, y)`` is
    ``x - y`` for a distance and ``y - x`` for a similarity (``inverted``), computed in that order.

    Sums with any ``low >= 0`` (or no bound) come from ``ops.hinge_triplet_sums`` in ``O(N M P)``
    comparisons, deciding exactly what the listed formula decides; other bounds visit the
    triplets in blocks like any :class:`TripletTerms`."""

    def __init__(self, mat, pos_mask, neg_mask, per_triplet, inverted, margin):
        super().__init__((mat,), pos_mask, neg_mask, per_triplet)
        self.sign = -1.0 if inverted else 1.0
        self.margin = margin

    def kept_sum(self, low=None, high=None):
        hinges = (self.matrices[0], self.pos_mask, self.neg_mask, self.sign, self.margin)
        if low is not None and low >= 0:
            return hinge_triplet_sums(*hinges, low, high)
        if low is None and high is None:
            # every term counts; those with v <= 0 add zero to the sum
            return hinge_triplet_sums(*hinges)[0], len(self)
        return super().kept_sum(low, high)


class SeparableTripletTerms(TripletTerms):
    """Triplet terms ``pos_terms[a, p] + neg_terms[a, n]``: a part from the positive pair plus a
    part from the negative pair (MarginLoss). Each ``(a, p)`` part occurs once per negative of
    ``a`` and each ``(a, n)`` part once per positive, so the sum of all terms comes from row sums;
    with ``nonnegative`` parts, so does the number of non-zero terms. Other bounds visit the
    triplets in blocks."""

    def __init__(self, pos_terms, neg_terms, pos_mask, neg_mask, reduction_type="triplet", nonnegative=False):
        super().__init__((pos_terms, neg_terms), pos_mask, neg_mask, _sum_of_parts, reduction_type)
        self.nonnegative = nonnegative

    def kept_sum(self, low=None, high=None):
        if high is not None or not (low is None or (low == 0 and self.nonnegative)):
            return super().kept_sum(low, high)
        pos_terms, neg_terms = self.matrices
        num_pos, num_neg = count_per_row(self.pos_mask), count_per_row(self.neg_mask)
        dtype = accumulation_dtype(self.dtype)
        zero = torch.zeros((), dtype=dtype, device=pos_terms.device)
        pos_rows = torch.where(self.pos_mask, pos_terms.to(dtype), zero).sum(dim=1)
        neg_rows = torch.where(self.neg_mask, neg_terms.to(dtype), zero).sum(dim=1)
        total = torch.sum(pos_rows * num_neg.to(dtype)) + torch.sum(neg_rows * num_pos.to(dtype))
        if low is None:
            return total, len(self)
        # a sum of two non-negative parts is > 0 unless both parts are 0
        zero_pos = count_per_row(self.pos_mask & (pos_terms == 0))
        zero_neg = count_per_row(self.neg_mask & (neg_terms == 0))
        return total, len(self) - int(torch.sum(zero_pos * zero_neg))


def _sum_of_parts(ap, an, anchors):
    return ap[0] + an[1]
