"""Retrieval metrics of a query and reference set that are spread over ``torch.distributed`` ranks.

Each rank passes its own shards (its rows of the global query set, its rows of the global
reference set, and their labels); the global sets are the rank-ordered concatenations. Every rank
returns the same dict, equal to ``calculator.get_accuracy`` on the global sets:

* k-NN metrics: the labels (small) are gathered on every rank, so label counts, lone queries and
  k are global. The neighbours of each local query are found over all reference shards with
  :func:`deepmetric.utils.sharded_knn.sharded_knn`, a block of queries at a time, so a rank never
  holds more than its shards plus one block of candidates. Each rank computes the per-query values
  of its queries; these (one number per query and metric) are gathered and averaged.
* cluster metrics (NMI, AMI): k-means needs every point, so the query embeddings are gathered on
  every rank and clustered there (deterministic, so every rank gets the same result). This is
  the one step whose memory grows with the global query set.

Metrics a subclass computes from the full ``knn_labels`` matrix (custom ``calculate_*`` methods
that need k-NN) are not supported here; they raise a ``ValueError``.
"""

import torch
import torch.distributed as dist

from ..distributed import all_gather_rows, is_distributed
from ..utils import common_functions as c_f
from . import accuracy_calculator as ac
from .sharded_knn import sharded_knn

_BLOCK_ENTRIES = 2**22  # query rows x neighbours per block of the k-NN search


def active(group=None):
    return is_distributed() and dist.get_world_size(group) > 1


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
    query = calculator._to_tensor(query, "query", False)
    reference = calculator._to_tensor(reference, "reference", False)
    query_labels = calculator._to_tensor(query_labels, "query_labels", True).double()
    reference_labels = calculator._to_tensor(reference_labels, "reference_labels", True).double()
    if len(query) != len(query_labels) or len(reference) != len(reference_labels):
        raise ValueError(
            "embeddings and labels must have the same length on every rank: "
            f"query {len(query)} vs query_labels {len(query_labels)}, "
            f"reference {len(reference)} vs reference_labels {len(reference_labels)}"
        )
    calculator.curr_function_dict = calculator.get_function_dict(include, exclude)
    names = list(calculator.curr_function_dict)
    knn_names = [n for n in names if n in calculator._knn_metrics()]
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
        for name in cluster_names:
            results[name] = calculator.curr_function_dict[name](**kwargs)
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
    label_counts = ac.get_label_match_counts(all_query_labels, all_reference_labels, cmp)
    _, not_lone = ac.get_lone_query_labels(query_labels, label_counts, own_in_ref, cmp)
    base_k = calculator.determine_k(label_counts[1], len(all_reference_labels), own_in_ref)
    available = len(all_reference_labels) - own
    requests = {name: calculator._engine_request(name, min(base_k, available)) for name in knn_names}
    unsupported = sorted(name for name, request in requests.items() if request is None)
    if unsupported:
        raise ValueError(f"sharded evaluation does not support the custom k-NN metrics {unsupported}")
    width = max([base_k] + [w for _, w in requests.values()])
    if width > available:
        # As AccuracyCalculator does: only the neighbours that exist are used.
        c_f.LOGGER.warning(
            f"k={width} is more than the {available} reference embeddings over all ranks: "
            f"the metrics use the {available} that exist"
        )
        width = available
    _, relevant = ac.get_relevance_mask(
        (len(query_labels), 0), query_labels[:, None], own_in_ref, label_counts
    )
    rows = torch.nonzero(not_lone).reshape(-1)
    offset = _row_offset(len(query), group)
    block = max(1, _BLOCK_ENTRIES // max(1, width + own))
    blocks = torch.tensor([(len(rows) + block - 1) // block])
    dist.all_reduce(blocks, op=dist.ReduceOp.MAX, group=group)  # every rank joins every search
    parts = {name: [] for name in requests}
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
        gt = query_labels[block_rows][:, None]
        rel = ac._relevance(gt, all_reference_labels[indices], cmp)
        for name, values in ac._per_query(rel, relevant[block_rows], requests).items():
            parts[name].append(values)
    gt_all = gather_rows(query_labels[rows], group)
    if len(gt_all) == 0:
        return {name: ac.nan_accuracy(label_counts[0], calculator.return_per_class) for name in requests}
    out = {}
    for name in requests:
        local = torch.cat(parts[name]) if parts[name] else torch.zeros(0, dtype=torch.float64)
        values = gather_rows(local, group)
        out[name] = ac.maybe_get_avg_of_avgs(
            values, gt_all[:, None], calculator.avg_of_avgs, calculator.return_per_class
        )
    return out


def calculator_distance(calculator):
    """The distance of the calculator's k-NN backend (ExactKNN / CustomKNN), default squared L2."""
    return getattr(calculator.knn_func, "distance", None)


def gather_rows(x, group=None):
    """The rank-ordered concatenation of every rank's ``x`` (their first dimensions may differ)."""
    return torch.cat(all_gather_rows(x, group))


def _row_offset(local_rows, group):
    sizes = gather_rows(torch.tensor([local_rows]), group)
    return int(sizes[: dist.get_rank(group)].sum())
