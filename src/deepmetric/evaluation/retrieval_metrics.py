"""The retrieval metrics of one query, from the ranks of its relevant reference items.

Every k-NN metric of the accuracy calculator is a function of where a query's relevant items
land in its ranking. With ``rank_1 < rank_2 < ...`` the 1-based ranks of the relevant items,
``R`` their number (see :mod:`.relevance`), ``w`` the metric's cut-off (``k``) and
``P@i = #{j : rank_j <= i} / i``, so that ``P@rank_j = j / rank_j``:

* ``precision`` at ``w``: ``#{j : rank_j <= w} / w`` (missing neighbours count as misses)
* ``recall`` at ``w``: 1 if ``rank_1 <= w`` else 0 (the CMC curve at rank ``w``)
* ``r_precision``: ``#{j : rank_j <= c} / c`` with ``c = min(R, w)``
* ``mean_average_precision``: ``(1 / R) sum_{rank_j <= w} j / rank_j``
* ``mean_average_precision_at_r``: ``(1 / R) sum_{rank_j <= c} j / rank_j``, ``c = min(R, w)``
  (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020)
* ``mean_average_precision_at_k``: ``(1 / min(R, w)) sum_{rank_j <= w} j / rank_j``
* ``mean_reciprocal_rank``: ``1 / rank_1`` if ``rank_1 <= w`` else 0

:func:`per_query_values` is the one implementation of these formulas. The ranks come either from
the retrieved neighbours (:func:`ranks_of_relevant` of their relevance, in rank order) or
straight from the sort-free positive-rank engine; both give the same ranks, so both give the same
values. The module functions below (``precision_at_k``, ``r_precision``, ...) are the reference
library's API on a matrix of neighbour labels.
"""

import torch

from .relevance import EQUALITY, get_relevance_mask, relevance

# Metric kinds whose cut-off is also R (the number of relevant items).
_CUT_AT_R = ("r_precision", "mean_average_precision_at_r")


def computed_per_query(kind, k=None):
    """Mark a ``calculate_<name>`` method of an ``AccuracyCalculator`` as the metric ``kind`` of
    :func:`per_query_values`, at cut-off ``k`` (``None``: the calculator's ``k``).

    The calculator computes a marked metric itself, query by query from ranks, without calling
    the method (which computes the same value from ``knn_labels``). A subclass that overrides the
    method without this mark has its own method called, with the reference's arguments.
    """

    def mark(method):
        method.per_query = (kind, k)
        return method

    return mark


def ranks_of_relevant(rel):
    """``(B, R')`` float64: the 1-based columns of the True entries of each row of the ``(B, K)``
    bool matrix ``rel``, ascending, ``inf`` padded; ``R'`` is the most True entries of a row (at
    least 1)."""
    b = rel.shape[0]
    width = max(1, int(rel.sum(dim=1).max())) if b and rel.shape[1] else 1
    ranks = torch.full((b, width), float("inf"), dtype=torch.float64, device=rel.device)
    rows, columns = rel.nonzero(as_tuple=True)
    slots = rel.cumsum(dim=1)[rows, columns] - 1
    ranks[rows, slots] = (columns + 1).to(torch.float64)
    return ranks


def per_query_values(ranks, relevant, requests, retrieved=None):
    """Per-query float64 values of the requested metrics (module docstring for the formulas).

    Args:
        ranks: ``(B, R')`` float64, the 1-based ranks of each query's relevant items in ascending
            order, ``inf`` padded (at least one column).
        relevant: ``(B,)`` ``R``, the number of relevant reference items of each query.
        requests: ``{key: (kind, width)}``, the metric ``kind`` at cut-off ``width``.
        retrieved: how many neighbours were ranked (``None``: the whole reference set). The
            cut-off of ``r_precision`` and ``mean_average_precision_at_r`` is then at most
            ``retrieved``, as the reference computes them on the retrieved neighbours.
    """
    r_count = relevant.to(torch.float64)
    positions = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    terms = positions / ranks  # P@rank_j at the j-th relevant item; 0 for padding
    first = ranks[:, 0]
    out = {}
    for key, (kind, width) in requests.items():
        if kind in _CUT_AT_R:
            limit = width if retrieved is None else min(width, retrieved)
            cutoff = torch.clamp(r_count, min=0, max=float(limit))[:, None]
        else:
            cutoff = width
        within = ranks <= cutoff
        if kind == "precision":
            out[key] = within.sum(dim=1, dtype=torch.float64) / width
        elif kind == "recall":
            out[key] = (first <= width).to(torch.float64)
        elif kind == "r_precision":
            out[key] = within.sum(dim=1, dtype=torch.float64) / cutoff[:, 0]
        elif kind in ("mean_average_precision", "mean_average_precision_at_r"):
            out[key] = (terms * within).sum(dim=1) / r_count
        elif kind == "mean_average_precision_at_k":
            out[key] = (terms * within).sum(dim=1) / torch.clamp(r_count, max=float(width))
        elif kind == "mean_reciprocal_rank":
            out[key] = torch.where(first <= width, 1.0 / first, torch.zeros_like(first))
        else:
            raise ValueError(f"unknown per-query metric kind {kind!r}")
    return out


def maybe_get_avg_of_avgs(accuracy_per_sample, sample_labels, avg_of_avgs, return_per_class):
    """Mean of the per-sample values, or the mean of per-class means, or the per-class means
    (classes in ascending label order)."""
    if avg_of_avgs or return_per_class:
        _, inverse = torch.unique(sample_labels, dim=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        num_classes = int(inverse.max()) + 1
        values = accuracy_per_sample.to(torch.float64)
        sums = torch.zeros(num_classes, dtype=torch.float64, device=values.device)
        sums.index_add_(0, inverse, values)
        counts = torch.bincount(inverse, minlength=num_classes).to(torch.float64)
        per_class = sums / counts
        if return_per_class:
            return per_class.cpu().tolist()
        return torch.mean(per_class).item()
    return torch.mean(accuracy_per_sample.to(torch.float64)).item()


def nan_accuracy(unique_labels, return_per_class):
    """The value of a k-NN metric when every query is lone."""
    if return_per_class:
        return [float("nan") for _ in range(len(unique_labels))]
    return float("nan")


# ------------------------------------------------------------------- the reference's functions
def _aggregated(kind, width, knn_labels, gt_labels, counted, avg_of_avgs, return_per_class, cmp):
    """``kind`` at ``width`` (``None``: every column) of each row of ``knn_labels`` (queries'
    neighbour labels in rank order), averaged. ``counted = (ref_includes_query, label_counts)``
    gives ``R`` for the metrics that need it (``None`` for the others)."""
    if counted is None:
        relevant = torch.zeros(knn_labels.shape[0], dtype=torch.long, device=knn_labels.device)
    else:
        _, relevant = get_relevance_mask(knn_labels.shape[:2], gt_labels, *counted)
    rel = relevance(gt_labels, knn_labels, cmp)
    retrieved = rel.shape[1]
    # Fewer than k neighbours still count as k slots (misses), as the reference does.
    request = {"v": (kind, retrieved if width is None else width)}
    values = per_query_values(ranks_of_relevant(rel), relevant, request, retrieved)["v"]
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def r_precision(
    knn_labels,
    gt_labels,
    ref_includes_query,
    label_counts,
    avg_of_avgs=False,
    return_per_class=False,
    label_comparison_fn=EQUALITY,
):
    """R-precision of each query (``gt_labels`` is ``query_labels[:, None]``), aggregated."""
    counted = (ref_includes_query, label_counts)
    options = (avg_of_avgs, return_per_class, label_comparison_fn)
    return _aggregated("r_precision", None, knn_labels, gt_labels, counted, *options)


def mean_average_precision(
    knn_labels,
    gt_labels,
    ref_includes_query,
    label_counts,
    avg_of_avgs=False,
    return_per_class=False,
    label_comparison_fn=EQUALITY,
    at_r=False,
):
    """MAP over all retrieved neighbours, or MAP@R with ``at_r=True``; both divide by R."""
    kind = "mean_average_precision_at_r" if at_r else "mean_average_precision"
    counted = (ref_includes_query, label_counts)
    options = (avg_of_avgs, return_per_class, label_comparison_fn)
    return _aggregated(kind, None, knn_labels, gt_labels, counted, *options)


def mean_reciprocal_rank(
    knn_labels, gt_labels, avg_of_avgs=False, return_per_class=False, label_comparison_fn=EQUALITY
):
    """Mean of ``1 / rank`` of the first relevant neighbour (0 when none is retrieved)."""
    options = (avg_of_avgs, return_per_class, label_comparison_fn)
    return _aggregated("mean_reciprocal_rank", None, knn_labels, gt_labels, None, *options)


def precision_at_k(
    knn_labels, gt_labels, k, avg_of_avgs=False, return_per_class=False, label_comparison_fn=EQUALITY
):
    """Fraction of the first ``k`` neighbours that are relevant."""
    options = (avg_of_avgs, return_per_class, label_comparison_fn)
    return _aggregated("precision", k, knn_labels, gt_labels, None, *options)


def recall_at_k(
    knn_labels, gt_labels, k, avg_of_avgs=False, return_per_class=False, label_comparison_fn=EQUALITY
):
    """Fraction of queries with at least one relevant item among their first ``k`` neighbours
    (the CMC curve at rank ``k``). Not in the reference library."""
    options = (avg_of_avgs, return_per_class, label_comparison_fn)
    return _aggregated("recall", k, knn_labels, gt_labels, None, *options)


def mean_average_precision_at_k(
    knn_labels,
    gt_labels,
    k,
    ref_includes_query,
    label_counts,
    avg_of_avgs=False,
    return_per_class=False,
    label_comparison_fn=EQUALITY,
):
    """``(1 / min(R, k)) sum_{i <= k} rel_i P@i`` (1 for a perfect ranking). Not in the reference."""
    counted = (ref_includes_query, label_counts)
    options = (avg_of_avgs, return_per_class, label_comparison_fn)
    return _aggregated("mean_average_precision_at_k", k, knn_labels, gt_labels, counted, *options)
