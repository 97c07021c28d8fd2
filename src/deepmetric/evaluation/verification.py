"""Verification metrics over every query-reference pair, exact, without the N x M score matrix.

A pair ``(query i, reference j)`` is *positive* when their labels are equal (or
``label_comparison_fn`` says they match) and *negative* otherwise; with
``ref_includes_query=True`` the pair of a query with itself is left out. The metrics of
:mod:`.pair_counts` (ROC curve and AUC, EER, TAR@FAR, FNMR@FMR, best F1) need only the distinct
positive scores and how many negatives lie between and on them. Positives are few (a query has a
handful to a few hundred), negatives are nearly all of the ``N M`` pairs, so the negatives are
never stored:

1. **Positives.** One pass over the pairs, a block of query rows at a time (one matrix product per
   block, as :class:`~deepmetric.evaluation.knn.ExactKNN` computes its keys), reads the positive
   scores out of each block by their positions (the references of each class are listed once) and
   sorts them.
2. **Negatives.** A second pass over the same blocks puts every score in one of ``B + 2`` bins
   (``B`` up to ``2^20``) of the range of the positive scores: ``bin = clamp((s - u_min) * B /
   (u_max - u_min), -1, B) + 1``, a non-decreasing function of ``s``. A bin without positives
   lies between two consecutive positive scores, so counting its entries (``bincount``) places
   them exactly; only the entries of bins that hold a positive are compared with the positives
   one by one.

The second pass recomputes exactly the scores of the first (same blocks, same operations); the
counts are checked against each other, and a mismatch (a non-deterministic matrix product) raises
an error instead of a wrong figure. Scores are the distance's own values (for distances the
metrics use ``-distance``, and thresholds are reported as distances), computed block by block in
float32 (float64 for float64 embeddings); a full-matrix call of the distance can differ from them
in the last bit.

Memory: the blocks (``memory_budget_bytes``, 128 MiB on CPU by default), the positive scores and
``O(B)`` counters. Time: two passes of matrix products plus a few elementwise passes over each
block.

A quantile of the negatives (the threshold at a target false match rate) is found in one more
pass, or a few: the bins above give the bin that holds it; that bin's negatives are collected and
sorted when they are few, otherwise the bin is split into ``2^16`` finer bins in one more pass
(twice at most in float32).

:func:`verification_counts` returns the :class:`~.pair_counts.PairCounts`; :func:`verification_metrics`
the figures by name (``roc_auc``, ``eer``, ``best_f1``, ``tar_at_far_<rate>``,
``fnmr_at_fmr_<rate>``), the names the accuracy calculator accepts. :func:`pair_list_counts`
does the same for an explicit list of pairs.
"""

import math
import os
import re

import torch

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError, SearchInputError
from ._knn_scores import Scorer
from .knn import DEFAULT_CPU_BUDGET_BYTES, DEFAULT_CUDA_BUDGET_BYTES, default_distance
from .pair_counts import OperatingPoint, PairCounts
from .relevance import EQUALITY, relevance

# Scratch bytes per score of a block: the score, its bin (float and int64) and a mask.
_BYTES_PER_ENTRY = 24
_MAX_BINS = 2**20
_MIN_BINS = 2**10
# A quantile's bin with at most this many negatives is collected and sorted; a larger one is split.
_COLLECT_LIMIT = 2**22
_SPLIT_BINS = 2**16

METRIC_NAMES = ("roc_auc", "eer", "best_f1")
_RATE_NAMES = ("tar_at_far", "fnmr_at_fmr")
_RATE_PATTERN = re.compile(r"^(tar_at_far|fnmr_at_fmr)_(.*)$")
_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?$")


# ------------------------------------------------------------------------------ metric names
def parse_metric_name(name):
    """``(kind, rate)`` of a verification metric name, ``rate`` None for ``roc_auc``, ``eer``
    and ``best_f1``; None when ``name`` is not a verification metric. A ``tar_at_far_<rate>`` or
    ``fnmr_at_fmr_<rate>`` with a rate that is not a number in (0, 1) raises a ValueError."""
    if not isinstance(name, str):
        return None
    if name in METRIC_NAMES:
        return name, None
    match = _RATE_PATTERN.match(name)
    if match is None:
        return None
    kind, text = match.groups()
    if not _NUMBER.match(text):
        raise ArgumentError(
            f"metric {name!r}: the rate {text!r} is not a number; write it like {kind}_1e-3 or "
            f"{kind}_0.001"
        )
    rate = float(text)
    if not 0 < rate < 1:
        raise ArgumentError(f"metric {name!r}: the rate must be in (0, 1), got {rate:g}")
    return kind, rate


def is_metric_name(name):
    """Whether ``name`` looks like a verification metric (a bad rate still counts: it is then
    reported by :func:`parse_metric_name`)."""
    return isinstance(name, str) and (name in METRIC_NAMES or bool(_RATE_PATTERN.match(name)))


def figures(counts, names):
    """``{name: value}`` of the verification metrics ``names`` from a :class:`PairCounts`; NaN
    (with a warning) when there are no positive or no negative pairs."""
    if counts.num_positives == 0 or counts.num_negatives == 0:
        c_f.LOGGER.warning(
            f"verification metrics need positive and negative pairs, got {counts.num_positives} "
            f"positive and {counts.num_negatives} negative pairs: {list(names)} are NaN"
        )
        return {name: float("nan") for name in names}
    out = {}
    for name in names:
        kind, rate = parse_metric_name(name)
        if kind == "roc_auc":
            out[name] = counts.roc_auc()
        elif kind == "eer":
            out[name] = counts.eer()
        elif kind == "best_f1":
            out[name] = counts.best_f1()
        elif kind == "tar_at_far":
            out[name] = counts.tar_at_far(rate)
        else:
            out[name] = counts.fnmr_at_fmr(rate)
    return out


# ------------------------------------------------------------------------------ public functions
def verification_counts(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    ref_includes_query=False,
    distance=None,
    label_comparison_fn=None,
    memory_budget_bytes=None,
):
    """The :class:`~.pair_counts.PairCounts` of every (query, reference) pair.

    Args:
        query, query_labels: ``(N, D)`` embeddings and their ``(N,)`` (or ``(N, L)``) labels.
        reference, reference_labels: ``(M, D)`` and ``(M,)``; ``None`` pairs the query set with
            itself (``ref_includes_query=True``).
        ref_includes_query: query ``i`` is reference ``i``; that pair is left out.
        distance: a deepmetric distance (default: squared Euclidean on raw embeddings, the
            default of :class:`~deepmetric.evaluation.knn.ExactKNN`).
        label_comparison_fn: ``fn(x, y) -> bool tensor`` deciding positives (default: equal labels).
        memory_budget_bytes: scratch memory for one block of scores.
    """
    return PairScores(
        query, query_labels, reference, reference_labels, ref_includes_query, distance,
        label_comparison_fn, memory_budget_bytes,
    ).counts()


def verification_metrics(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    ref_includes_query=False,
    distance=None,
    metrics=("roc_auc", "eer"),
    label_comparison_fn=None,
    memory_budget_bytes=None,
):
    """``{name: value}`` of the verification ``metrics`` (see :func:`parse_metric_name`) over
    every (query, reference) pair; arguments as :func:`verification_counts`."""
    if isinstance(metrics, str) or not isinstance(metrics, (tuple, list)):
        raise ArgumentError(f"metrics must be a tuple or list of names, got {metrics!r}")
    unknown = [name for name in metrics if parse_metric_name(name) is None]
    if unknown:
        raise ArgumentError(
            f"unknown verification metric(s) {unknown}; use {', '.join(METRIC_NAMES)}, "
            "tar_at_far_<rate> or fnmr_at_fmr_<rate>"
        )
    counts = verification_counts(
        query, query_labels, reference, reference_labels, ref_includes_query, distance,
        label_comparison_fn, memory_budget_bytes,
    )
    return figures(counts, metrics)


def pair_list_counts(query, reference, query_indices, reference_indices, is_positive, distance=None):
    """The :class:`~.pair_counts.PairCounts` of an explicit list of pairs.

    Pair ``t`` is ``(query[query_indices[t]], reference[reference_indices[t]])``, positive when
    ``is_positive[t]``. Its score is ``distance.pairwise_distance`` of the two rows (what
    ``MatchFinder.is_match`` compares with a threshold). Memory grows with the list."""
    distance = default_distance() if distance is None else distance
    query = checked_embeddings(query, "query")
    reference = query if reference is None else checked_embeddings(reference, "reference")
    qi = _index_list(query_indices, "query_indices", len(query))
    ri = _index_list(reference_indices, "reference_indices", len(reference))
    positive = torch.as_tensor(is_positive, device=qi.device).reshape(-1)
    if not (len(qi) == len(ri) == len(positive)):
        raise ArgumentError(
            "query_indices, reference_indices and is_positive must have the same length, got "
            f"{len(qi)}, {len(ri)} and {len(positive)}"
        )
    positive = positive.bool()
    values = []
    step = max(1, 2**22 // max(1, query.shape[1]))
    with torch.no_grad():
        for s in range(0, len(qi), step):
            q = query[qi[s : s + step].to(query.device)]
            r = reference[ri[s : s + step].to(reference.device)]
            value = distance.pairwise_distance(distance.maybe_normalize(q), distance.maybe_normalize(r))
            values.append(value if distance.power == 1 else value**distance.power)
    scores = torch.cat(values).detach().cpu() if values else torch.zeros(0, dtype=query.dtype)
    scores = scores.double() if scores.dtype == torch.float64 else scores.float()
    positive = positive.cpu()
    return PairCounts.from_scores(scores[positive], scores[~positive], is_distance=not distance.is_inverted)


def roc_curve(query, query_labels, reference=None, reference_labels=None, ref_includes_query=False,
              distance=None, max_points=1000, memory_budget_bytes=None):
    """``(fpr, tpr, thresholds)`` over every pair (see :meth:`.pair_counts.PairCounts.roc_curve`)."""
    counts = verification_counts(
        query, query_labels, reference, reference_labels, ref_includes_query, distance,
        memory_budget_bytes=memory_budget_bytes,
    )
    return counts.roc_curve(max_points=max_points)


# ------------------------------------------------------------------------------ the pair source
class PairScores:
    """Every (query, reference) pair's score, positive or not, a block of query rows at a time.

    The same blocks and the same operations on every pass, so every pass sees the same scores.
    :meth:`counts` makes the :class:`PairCounts` (two passes); :meth:`negative_at_rank`,
    :meth:`operating_points` answer more questions with one or two passes each.
    Arguments as :func:`verification_counts`.
    """

    allows_empty_query = False  # a shard of a distributed query set may hold no rows

    def __init__(self, query, query_labels, reference=None, reference_labels=None,
                 ref_includes_query=False, distance=None, label_comparison_fn=None,
                 memory_budget_bytes=None):
        self.distance = default_distance() if distance is None else distance
        if reference is None:
            reference, reference_labels, ref_includes_query = query, query_labels, True
        query = checked_embeddings(query, "query", allow_empty=self.allows_empty_query)
        reference = checked_embeddings(reference, "reference")
        if query.shape[1] != reference.shape[1]:
            raise SearchInputError(
                f"query and reference must have the same width, got {query.shape[1]} and {reference.shape[1]}"
            )
        device = query.device
        reference = reference.to(device=device, dtype=query.dtype)
        query_labels = _labels(query_labels, "query_labels", len(query), device)
        reference_labels = _labels(reference_labels, "reference_labels", len(reference), device)
        if ref_includes_query and len(reference) < len(query):
            raise ArgumentError(
                "ref_includes_query=True needs the query set to be the first rows of the reference "
                f"set, but the reference has {len(reference)} rows and the query {len(query)}"
            )
        self.query, self.reference = query, reference
        self.own = bool(ref_includes_query)
        # Global row number of local query row 0 (a shard's queries start further down): query
        # ``row_offset + i`` is reference ``row_offset + i`` when the sets are the same.
        self.row_offset = 0
        self.is_distance = not self.distance.is_inverted
        self.sign = -1.0 if self.is_distance else 1.0
        self.dtype = query.dtype
        self.compare = label_comparison_fn or EQUALITY
        self.query_labels, self.reference_labels = query_labels, reference_labels
        if self.compare is EQUALITY:
            both = torch.cat([query_labels, reference_labels]) + 0.0  # -0.0 and 0.0 are equal
            _, ids = torch.unique(both, dim=0 if both.dim() > 1 else None, return_inverse=True)
            ids = ids.reshape(-1)
            self.query_ids, self.reference_ids = ids[: len(query)], ids[len(query) :]
            self.columns = _ClassColumns(self.reference_ids)
        self.scorer = Scorer(self.distance, reference)
        budget = memory_budget(memory_budget_bytes, device)
        self.rows = max(1, min(len(query), budget // (_BYTES_PER_ENTRY * len(reference))))

    @property
    def num_entries(self):
        """Entries of all blocks: every (query, reference) pair, own pairs included."""
        return len(self.query) * len(self.reference)

    # ---------------------------------------------------------------- blocks
    def blocks(self):
        """``(start, values)``: the distance's values of query rows ``start : start + b`` against
        every reference (the same each time)."""
        with torch.no_grad():
            for s in range(0, len(self.query), self.rows):
                q = self.scorer.prepare_query(self.query[s : s + self.rows])
                values = self.scorer.finalize(q, self.scorer.keys(q, 0, self.scorer.n))
                yield s, values

    def special_entries(self, start, width, b):
        """``(positive, own)``: flat positions in a ``(b, width)`` block of its positive pairs
        (own pairs excluded) and of its own pairs."""
        rows = torch.arange(start, start + b, device=self.query.device)
        if self.compare is EQUALITY:
            local, columns = self.columns.of_rows(self.query_ids[rows])
        else:
            rel = relevance(self.query_labels[rows][:, None], self.reference_labels[None, :], self.compare)
            local, columns = rel.nonzero(as_tuple=True)
        own = torch.zeros(0, dtype=torch.long, device=rows.device)
        if self.own:
            global_rows = rows + self.row_offset
            keep = columns != global_rows[local]
            local, columns = local[keep], columns[keep]
            own = torch.arange(b, device=rows.device) * width + global_rows
        return local * width + columns, own

    def classify(self, rows, columns):
        """``(positive, own)`` bool masks of the pairs ``(rows[t], columns[t])``."""
        if self.compare is EQUALITY:
            positive = self.query_ids[rows] == self.reference_ids[columns]
        else:
            pair_labels = (self.query_labels[rows][:, None], self.reference_labels[columns][:, None])
            positive = relevance(*pair_labels, self.compare).reshape(-1)
        own = rows + self.row_offset == columns if self.own else torch.zeros_like(positive)
        return positive & ~own, own

    def combine(self, tensor):
        """The sum of ``tensor`` over the processes that share the work (here: itself)."""
        return tensor

    def gather(self, tensor):
        """The concatenation of ``tensor`` over the processes that share the work."""
        return tensor

    # ---------------------------------------------------------------- pass 1: positives
    def positive_scores(self):
        """``(positives, own)``: float scores (larger means more alike) of every positive pair
        and of every own pair."""
        positives, own = [], []
        for start, values in self.blocks():
            b, width = values.shape
            pos_flat, own_flat = self.special_entries(start, width, b)
            flat = values.reshape(-1)
            positives.append(flat[pos_flat] * self.sign)
            own.append(flat[own_flat] * self.sign)
        positives = self.gather(torch.cat(positives) if positives else self.query.new_zeros(0))
        own = self.gather(torch.cat(own) if own else self.query.new_zeros(0))
        return positives, own

    # ---------------------------------------------------------------- pass 2: negatives
    def counts(self):
        """The :class:`PairCounts` of every pair (two passes; module docstring)."""
        positives, own = self.positive_scores()
        values, multiplicity = torch.unique(positives, sorted=True, return_counts=True)
        self.positive_values, self.positive_multiplicity = values, multiplicity
        self.own_scores = own
        total = self.combine(torch.tensor([self.num_entries], device=values.device))
        negatives_total = int(total) - len(positives) - len(own)
        if len(values) == 0:
            self.bins = None
            counts = torch.tensor([negatives_total])
            return PairCounts(values.cpu(), multiplicity.cpu(), counts, self.dtype, self.is_distance)
        bins = _Bins.around(values, self.sign)
        self.bins = bins
        per_bin, slots, mixed_found, positives_found = self._negative_pass(bins, values)
        per_bin = self.combine(per_bin)
        slots = self.combine(slots)
        found = self.combine(torch.stack([mixed_found, positives_found]))
        # every pair counted once: the positive and own scores of pass 1 are in their bins
        per_bin -= bins.histogram(values, multiplicity)
        per_bin -= bins.histogram(own)
        mixed = bins.mixed
        consistent = int(found[1]) == len(positives) and int(found[0]) == int(per_bin[mixed].sum())
        if not consistent or bool((per_bin < 0).any()):
            raise RuntimeError(
                "verification: the scores of the second pass differ from those of the first (the "
                "matrix product is not deterministic on this device); the counts would be wrong"
            )
        pure = ~mixed
        slots.index_add_(0, 2 * bins.first[pure], per_bin[pure])
        self.negatives_per_bin = per_bin
        if int(slots.sum()) != negatives_total:
            raise RuntimeError("verification: the negative counts do not add up (internal error)")
        return PairCounts(values.cpu(), multiplicity.cpu(), slots.cpu(), self.dtype, self.is_distance)

    def _negative_pass(self, bins, values):
        """Per-bin counts of every entry, and exact slot counts of the negatives in bins that
        hold positives."""
        device = values.device
        per_bin = torch.zeros(bins.count + 2, dtype=torch.long, device=device)
        slots = torch.zeros(2 * len(values) + 1, dtype=torch.long, device=device)
        mixed_found = torch.zeros((), dtype=torch.long, device=device)
        positives_found = torch.zeros((), dtype=torch.long, device=device)
        for start, block in self.blocks():
            b, width = block.shape
            index = bins.of_values(block)
            per_bin += torch.bincount(index.reshape(-1), minlength=bins.count + 2)
            flat = torch.nonzero(bins.mixed[index].reshape(-1)).reshape(-1)
            if len(flat) == 0:
                continue
            rows, columns = flat // width + start, flat % width
            positive, own = self.classify(rows, columns)
            positives_found += positive.sum()
            negative = ~(positive | own)
            scores = block.reshape(-1)[flat[negative]] * self.sign
            mixed_found += len(scores)
            slot = torch.searchsorted(values, scores, side="left")
            slot += torch.searchsorted(values, scores, side="right")
            slots.index_add_(0, slot, torch.ones_like(slot))
        return per_bin, slots, mixed_found, positives_found

    # ---------------------------------------------------------------- quantiles and thresholds
    def negative_at_rank(self, rank):
        """``(score, above)``: the ``rank``-th largest negative score (1-based, ties counted
        separately) and how many negatives are strictly larger. Needs :meth:`counts` first."""
        per_bin = self.negatives_per_bin
        if not 1 <= rank <= int(per_bin.sum()):
            raise ArgumentError(f"rank must be in [1, {int(per_bin.sum())}], got {rank}")
        from_top = _suffix(per_bin)
        b = int(torch.nonzero(from_top >= rank).reshape(-1)[-1])
        above_bin = int(from_top[b + 1]) if b + 1 < len(from_top) else 0
        chain = [(self.bins, b)]
        rank_in, count = rank - above_bin, int(per_bin[b])
        for _ in range(8):
            if count <= _COLLECT_LIMIT:
                members = torch.sort(self._members(chain), descending=True).values
                value = members[rank_in - 1]
                above = above_bin + int((members > value).sum())
                return float(value), above
            low, high = self._member_range(chain)
            if low == high:
                return low, above_bin  # every member equal: none of them above another
            finer = _Bins(low, high, _SPLIT_BINS, self.sign)
            histogram = self.combine(self._member_histogram(chain, finer))
            from_top = _suffix(histogram)
            sub = int(torch.nonzero(from_top >= rank_in).reshape(-1)[-1])
            above_sub = int(from_top[sub + 1]) if sub + 1 < len(from_top) else 0
            above_bin += above_sub
            rank_in -= above_sub
            count = int(histogram[sub])
            chain.append((finer, sub))
        raise RuntimeError("verification: could not isolate the quantile (internal error)")

    def _member_entries(self, chain):
        """For each block: the negative scores whose bins are those of ``chain``."""
        for start, block in self.blocks():
            width = block.shape[1]
            grid, b = chain[0]
            flat = torch.nonzero((grid.of_values(block) == b).reshape(-1)).reshape(-1)
            if len(flat) == 0:
                continue
            positive, own = self.classify(flat // width + start, flat % width)
            flat = flat[~(positive | own)]
            raw = block.reshape(-1)[flat]
            for grid, b in chain[1:]:
                raw = raw[grid.of_values(raw) == b]
            yield raw * self.sign

    def _members(self, chain):
        parts = list(self._member_entries(chain))
        local = torch.cat(parts) if parts else self.query.new_zeros(0)
        return self.gather(local)

    def _member_range(self, chain):
        low, high = math.inf, -math.inf
        for scores in self._member_entries(chain):
            if len(scores):
                low, high = min(low, float(scores.min())), max(high, float(scores.max()))
        local = torch.tensor([[low, -high]], dtype=torch.float64, device=self.query.device)
        extremes = self.gather(local)
        return float(extremes[:, 0].min()), -float(extremes[:, 1].min())

    def _member_histogram(self, chain, finer):
        histogram = torch.zeros(finer.count + 2, dtype=torch.long, device=self.query.device)
        for scores in self._member_entries(chain):
            histogram += torch.bincount(finer.of_scores(scores), minlength=finer.count + 2)
        return histogram

    def operating_points(self, thresholds):
        """:class:`~.pair_counts.OperatingPoint` of each threshold (in the distance's units: a
        pair matches when ``distance <= t``, or ``similarity >= t``): one pass."""
        thresholds = [float(t) for t in thresholds]
        accepted = torch.zeros(len(thresholds), dtype=torch.long, device=self.query.device)
        for _, block in self.blocks():
            for i, t in enumerate(thresholds):
                accepted[i] += (block <= t).sum() if self.is_distance else (block >= t).sum()
        accepted = self.combine(accepted).cpu()
        positives, own = self.positive_scores()
        negatives = self.num_all_pairs() - len(positives) - len(own)
        out = []
        for i, t in enumerate(thresholds):
            # compared in the scores' dtype, as the blocks were: -v >= -t  <=>  v <= t
            limit = torch.tensor(t, dtype=positives.dtype, device=positives.device) * self.sign
            tp = int((positives >= limit).sum())
            own_accepted = int((own >= limit).sum())
            fp = int(accepted[i]) - tp - own_accepted
            out.append(OperatingPoint(t, tp, fp, len(positives), negatives))
        return out

    def num_all_pairs(self):
        return int(self.combine(torch.tensor([self.num_entries], device=self.query.device)))


# ------------------------------------------------------------------------------ helpers
class _ClassColumns:
    """The reference columns of each class, to list a block's positive entries without
    scanning the block."""

    def __init__(self, reference_ids):
        self.order = torch.argsort(reference_ids, stable=True)
        self.sorted = reference_ids[self.order]

    def of_rows(self, row_ids):
        """``(rows, columns)``: every ``(r, c)`` with ``reference_ids[c] == row_ids[r]``."""
        starts = torch.searchsorted(self.sorted, row_ids, side="left")
        sizes = torch.searchsorted(self.sorted, row_ids, side="right") - starts
        rows = torch.repeat_interleave(torch.arange(len(row_ids), device=row_ids.device), sizes)
        offsets = torch.arange(len(rows), device=row_ids.device) - torch.repeat_interleave(
            torch.cumsum(sizes, 0) - sizes, sizes
        )
        return rows, self.order[starts[rows] + offsets]


class _Bins:
    """``count`` equal bins over ``[low, high]`` of the scores, plus one below and one above:
    ``index = clamp((score - low) * scale, -1, count) + 1``, computed in the scores' dtype by
    the same operations for every tensor, so that equal scores share a bin and the index never
    decreases as the score grows. Works on the distance's values (``sign = -1`` for distances:
    ``score = -value``) without negating them."""

    def __init__(self, low, high, count, sign):
        self.count, self.sign, self.low = count, sign, low
        span = high - low
        self.scale = min(count / span, 1e30) if span > 0 else 1.0
        self.mixed = self.first = None

    @classmethod
    def around(cls, values, sign):
        """Bins over the range of the sorted distinct positive scores ``values``, with
        ``mixed`` (bins holding a positive) and ``first`` (distinct positives below each bin)."""
        finite = values[torch.isfinite(values)]
        low = float(finite[0]) if len(finite) else 0.0
        high = float(finite[-1]) if len(finite) else 0.0
        count = min(_MAX_BINS, max(_MIN_BINS, 1 << (4 * len(values) - 1).bit_length()))
        grid = cls(low, high, count, sign)
        positives_per_bin = torch.bincount(grid.of_scores(values), minlength=count + 2)
        grid.mixed = positives_per_bin > 0
        grid.first = torch.cumsum(positives_per_bin, 0) - positives_per_bin
        return grid

    def of_scores(self, scores):
        """Bin indices of scores (larger means more alike), int64."""
        t = torch.sub(scores, self.low)
        t.mul_(self.scale).clamp_(-1, self.count).add_(1)
        return t.long()

    def of_values(self, values):
        """Bin indices of the distance's values (the scores are ``sign * values``)."""
        if self.sign > 0:
            return self.of_scores(values)
        # (-v - low) * scale == (v + low) * -scale, bit for bit (negation is exact)
        t = torch.sub(values, -self.low)
        t.mul_(-self.scale).clamp_(-1, self.count).add_(1)
        return t.long()

    def histogram(self, scores, weights=None):
        index = self.of_scores(scores)
        if weights is None:
            return torch.bincount(index, minlength=self.count + 2)
        histogram = torch.zeros(self.count + 2, dtype=torch.long, device=index.device)
        return histogram.index_add_(0, index, weights)


def _suffix(x):
    return torch.flip(torch.cumsum(torch.flip(x, [0]), 0), [0])


def memory_budget(memory_budget_bytes, device):
    """Scratch bytes for one block: the argument, else ``DEEPMETRIC_KNN_MEMORY_MB``, else the
    device's default."""
    if memory_budget_bytes is not None:
        value = memory_budget_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"memory_budget_bytes must be a positive int or None, got {value!r}")
        return memory_budget_bytes
    env = os.environ.get("DEEPMETRIC_KNN_MEMORY_MB")
    if env:
        return int(float(env) * 2**20)
    return DEFAULT_CUDA_BUDGET_BYTES if device.type == "cuda" else DEFAULT_CPU_BUDGET_BYTES


def checked_embeddings(x, name, allow_empty=False):
    """``x`` as a finite float32 (or float64) ``(N, D)`` tensor, or an error naming ``name``."""
    if x is None:
        raise ArgumentError(f"{name} must be given")
    x = c_f.numpy_to_torch(x)
    if not torch.is_tensor(x):
        x = torch.as_tensor(x)
    if x.dim() != 2 or (x.shape[0] == 0 and not allow_empty) or x.shape[1] == 0:
        raise SearchInputError(f"{name} must be a non-empty 2-D (N, D) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise SearchInputError(f"{name} must hold floating-point embeddings, got dtype {x.dtype}")
    x = x.detach()
    x = x.double() if x.dtype == torch.float64 else x.float()
    if not bool(torch.isfinite(x).all()):
        raise SearchInputError(f"{name} contains NaN or Inf values")
    return x


def _labels(labels, name, length, device):
    if labels is None:
        raise ArgumentError(f"{name} must be given")
    labels = c_f.numpy_to_torch(labels)
    if not torch.is_tensor(labels):
        labels = torch.as_tensor(labels)
    if labels.dim() == 0 or labels.shape[0] != length:
        raise ArgumentError(
            f"{name} must have one label per embedding: expected {length}, got shape {tuple(labels.shape)}"
        )
    if labels.dtype == torch.bool or labels.is_complex():
        raise ArgumentError(f"{name} must be numeric, got dtype {labels.dtype}")
    return labels.to(device)


def _index_list(indices, name, size):
    indices = torch.as_tensor(c_f.numpy_to_torch(indices)).reshape(-1)
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise ArgumentError(f"{name} must hold integer indices, got dtype {indices.dtype}")
    indices = indices.long()
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
        low, high = int(indices.min()), int(indices.max())
        raise ArgumentError(f"{name} must be in [0, {size}), got values in [{low}, {high}]")
    return indices
