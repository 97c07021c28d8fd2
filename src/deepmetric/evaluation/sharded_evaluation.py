"""Retrieval metrics of a query and reference set that are spread over ``torch.distributed`` ranks.

Each rank passes its own shards (its rows of the global query set, its rows of the global
reference set, and their labels); the global sets are the rank-ordered concatenations. Every rank
returns the same dict, equal to ``calculator.get_accuracy`` on the global sets:

* k-NN metrics: the labels (small) are gathered on every rank, so label counts, lone queries and
  k are global. The neighbours of each local query are found over all reference shards with
  :func:`deepmetric.evaluation.sharded_knn.sharded_knn`, a block of queries at a time, so a rank never
  holds more than its shards plus one block of candidates. Each rank computes the per-query values
  of its queries; these (one number per query and metric) are gathered and averaged.
* cluster metrics (NMI, AMI): k-means needs every point, so the query embeddings are gathered on
  every rank and clustered there (deterministic, so every rank gets the same result). This is
  the one step whose memory grows with the global query set.

* verification metrics (``roc_auc``, ``eer``, ``tar_at_far_<rate>``, ...): every rank gathers
  the reference set (its embeddings and labels) and scores its own query rows against all of it,
  block by block (:class:`~deepmetric.evaluation.verification.PairScores`); the positive scores
  (few) are gathered and the negative counts summed over ranks, so every rank gets the exact
  figures of the whole set. Memory grows with the global reference set, not with the pairs.

Metrics a subclass computes from the full ``knn_labels`` matrix (custom ``calculate_*`` methods
that need k-NN) are not supported here; they raise a ``ValueError``.
"""

import torch
import torch.distributed as dist

from ..ops.gather import gather_rows, world_size
from ..utils import common_functions as c_f
from .relevance import get_label_match_counts, get_lone_query_labels
from .retrieval_metrics import maybe_get_avg_of_avgs, nan_accuracy
from .sharded_knn import sharded_knn
from .verification import PairScores, figures

_BLOCK_ENTRIES = 2**22  # query rows x neighbours per block of the k-NN search


def active(group=None):
    """Whether more than one process takes part (an initialised group of two or more)."""
    return world_size(group) > 1


def sharded_accuracy(
    calculator,
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    ref_includes_query=False,
    include=(),
    exclude=(),
    group=None,
):
    """``calculator``'s metrics of the global sets; see the module docstring."""
    if not active(group):
        return calculator.get_accuracy(
            query, query_labels, reference, reference_labels, ref_includes_query, include, exclude
        )
    if reference is None:
        reference, reference_labels, ref_includes_query = query, query_labels, True
    query, query_labels, reference, reference_labels = calculator.checked_inputs(
        query, query_labels, reference, reference_labels
    )
    # Every rank must gather labels of one dtype, whatever its own shard holds.
    query_labels, reference_labels = query_labels.double(), reference_labels.double()
    names = calculator.select_metrics(include, exclude)
    knn_names = [n for n in names if n in calculator.knn_metrics()]
    if knn_names and getattr(calculator, "postprocess", None) is not None:
        raise ValueError("sharded evaluation does not support AccuracyCalculator(postprocess=...)")
    results = {}
    if knn_names:
        results.update(
            _knn_metrics(
                calculator,
                knn_names,
                query,
                query_labels,
                reference,
                reference_labels,
                ref_includes_query,
                group,
            )
        )
    verification_names = [n for n in names if n in calculator.verification_metrics()]
    if verification_names:
        all_reference = gather_rows(reference, group)
        all_reference_labels = gather_rows(reference_labels, group)
        source = ShardedPairScores(
            query,
            query_labels,
            all_reference,
            all_reference_labels,
            ref_includes_query,
            calculator_distance(calculator),
            calculator.label_comparison_fn,
            group=group,
        )
        results.update(figures(source.counts(), verification_names))
    cluster_names = [n for n in names if n in calculator.requires_clustering()]
    if cluster_names:
        all_query = gather_rows(query, group)
        all_labels = gather_rows(query_labels, group)
        kwargs = {
            "query": all_query,
            "query_labels": all_labels,
            "label_comparison_fn": calculator.label_comparison_fn,
        }
        kwargs["cluster_labels"] = calculator.get_cluster_labels(**kwargs)
        for name, metric in calculator.get_function_dict(cluster_names).items():
            results[name] = metric(**kwargs)
    missing = [n for n in names if n not in results]
    if missing:
        raise ValueError(
            f"sharded evaluation cannot compute {missing}: they need neither k-NN nor clustering"
        )
    return {n: results[n] for n in names}


def _knn_metrics(calculator, knn_names, query, query_labels, reference, reference_labels, own_in_ref, group):
    cmp = calculator.label_comparison_fn
    own = int(bool(own_in_ref))
    all_query_labels = gather_rows(query_labels, group)
    all_reference_labels = gather_rows(reference_labels, group)
    label_counts = get_label_match_counts(all_query_labels, all_reference_labels, cmp)
    _, not_lone = get_lone_query_labels(query_labels, label_counts, own_in_ref, cmp)
    base_k = calculator.determine_k(label_counts[1], len(all_reference_labels), own_in_ref)
    available = len(all_reference_labels) - own
    unsupported = sorted(name for name in knn_names if not calculator.computes_per_query(name))
    if unsupported:
        raise ValueError(f"sharded evaluation does not support the custom k-NN metrics {unsupported}")
    k = min(base_k, available)
    width = max([base_k] + [calculator.cutoff(name, k) for name in knn_names])
    if width > available:
        # As AccuracyCalculator does: only the neighbours that exist are used.
        c_f.LOGGER.warning(
            f"k={width} is more than the {available} reference embeddings over all ranks: "
            f"the metrics use the {available} that exist"
        )
        width = available
    rows = torch.nonzero(not_lone).reshape(-1)
    offset = _row_offset(len(query), group)
    block = max(1, _BLOCK_ENTRIES // max(1, width + own))
    blocks = torch.tensor([(len(rows) + block - 1) // block])
    dist.all_reduce(blocks, op=dist.ReduceOp.MAX, group=group)  # every rank joins every search
    parts = {name: [] for name in knn_names}
    for b in range(int(blocks)):
        block_rows = rows[b * block : (b + 1) * block]
        _, indices = sharded_knn(
            query[block_rows],
            width,
            reference,
            own_in_ref,
            calculator_distance(calculator),
            group,
            query_indices=block_rows + offset,
        )
        if len(block_rows) == 0:
            continue
        values = calculator.per_query_accuracy(
            knn_names,
            k,
            query_labels[block_rows],
            label_counts,
            own_in_ref,
            knn_labels=all_reference_labels[indices],
        )
        for name, v in values.items():
            parts[name].append(v)
    gt_all = gather_rows(query_labels[rows], group)
    if len(gt_all) == 0:
        return {name: nan_accuracy(label_counts[0], calculator.return_per_class) for name in knn_names}
    out = {}
    for name in knn_names:
        local = torch.cat(parts[name]) if parts[name] else torch.zeros(0, dtype=torch.float64)
        values = gather_rows(local, group)
        out[name] = maybe_get_avg_of_avgs(
            values, gt_all[:, None], calculator.avg_of_avgs, calculator.return_per_class
        )
    return out


class ShardedPairScores(PairScores):
    """The pairs of this rank's query rows with the whole (gathered) reference set; counts are
    summed and score lists gathered over the ranks of ``group``, so :meth:`counts` and the
    quantiles are those of every pair of the global sets. Every rank must call the same methods;
    a rank may hold no query rows."""

    allows_empty_query = True

    def __init__(self, query, query_labels, reference, reference_labels, ref_includes_query=False,
                 distance=None, label_comparison_fn=None, memory_budget_bytes=None, group=None):
        super().__init__(query, query_labels, reference, reference_labels, ref_includes_query,
                         distance, label_comparison_fn, memory_budget_bytes)
        self.group = group
        self.row_offset = _row_offset(len(self.query), group)

    def combine(self, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def gather(self, tensor):
        return gather_rows(tensor, self.group)


def calculator_distance(calculator):
    """The distance of the calculator's k-NN backend (ExactKNN / CustomKNN), default squared L2."""
    return getattr(calculator.knn_func, "distance", None)


def _row_offset(local_rows, group):
    sizes = gather_rows(torch.tensor([local_rows]), group)
    return int(sizes[: dist.get_rank(group)].sum())
