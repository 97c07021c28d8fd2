"""Which reference items are relevant to a query, and how many there are.

A reference item is relevant to a query when ``label_comparison_fn(query_label,
reference_label)`` holds (``torch.eq`` by default: equal labels; for multi-column labels every
column must agree). ``label_counts = (unique_query_labels, match_counts)`` gives, for each
distinct query label, how many reference items match it; a query's number of relevant items
``R`` is its label's count, minus one when the reference set includes the query itself. A query
with no relevant item other than itself is *lone*: it is left out of the k-NN metrics.
"""

import torch

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError

EQUALITY = torch.eq


def get_unique_labels(labels):
    """Sorted unique labels (rows, for multi-column labels)."""
    return torch.unique(labels, dim=0)


def _match_index(labels, table):
    """Position of each row of ``labels`` in ``table`` (rows compared exactly), -1 when absent."""
    n, u = labels.shape[0], table.shape[0]
    if u == 0:
        return torch.full((n,), -1, dtype=torch.long, device=labels.device)
    table = table.to(labels.device, labels.dtype)
    merged = torch.cat([table.reshape(u, -1), labels.reshape(n, -1)])
    _, inverse = torch.unique(merged, dim=0, return_inverse=True)
    lookup = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=labels.device)
    # Duplicated table rows: any position is fine, callers pass unique tables.
    lookup[inverse[:u]] = torch.arange(u, device=labels.device)
    return lookup[inverse[u:]]


def relevance(gt_labels, knn_labels, label_comparison_fn):
    """(N, K) bool: does neighbour j of query i match its label? ``gt_labels`` is (N, 1, ...)."""
    rel = label_comparison_fn(gt_labels, knn_labels)
    if rel.dim() > 2:
        # An elementwise comparison of multi-column labels: a match needs every column to agree.
        rel = c_f.torch_all_from_dim_to_end(rel, 2)
    return rel.bool()


def _label_count_tensors(label_counts, device):
    """``(unique_labels, counts)`` as tensors on ``device``; like the reference, ``label_counts``
    may hold lists, tuples or arrays as well as tensors."""
    try:
        unique_labels, counts = label_counts
    except (TypeError, ValueError):
        raise ArgumentError(
            "label_counts must be a pair (unique_labels, match_counts), "
            f"got {type(label_counts).__name__}"
        ) from None
    unique_labels, counts = _as_tensor(unique_labels, device), _as_tensor(counts, device)
    if unique_labels.shape[:1] != counts.shape:
        raise ArgumentError(
            "label_counts must pair each unique label with one count, got "
            f"{tuple(unique_labels.shape)} labels and {tuple(counts.shape)} counts"
        )
    return unique_labels, counts.to(torch.long)


def _as_tensor(x, device):
    x = c_f.numpy_to_torch(x)
    if isinstance(x, (list, tuple)) and x and all(torch.is_tensor(v) for v in x):
        return torch.stack(list(x)).to(device)
    return torch.as_tensor(x, device=device)


def get_relevance_mask(shape, gt_labels, ref_includes_query, label_counts):
    """``(mask, R)``: row i of the (N, K) mask is True in its first ``R_i`` columns, where ``R_i``
    is the number of relevant reference items of query i (0 for labels absent from label_counts)."""
    unique_labels, counts = _label_count_tensors(label_counts, gt_labels.device)
    n = gt_labels.shape[0]
    position = _match_index(gt_labels.reshape(n, *unique_labels.shape[1:]), unique_labels)
    relevant = counts[position.clamp(min=0)] - int(bool(ref_includes_query))
    relevant = torch.where(position >= 0, relevant, torch.zeros_like(relevant))
    columns = torch.arange(shape[1], device=gt_labels.device)
    return columns < relevant[:, None], relevant


def get_label_match_counts(query_labels, reference_labels, label_comparison_fn):
    """``(unique_query_labels, match_counts)``: how many reference items match each query label."""
    unique_query_labels = get_unique_labels(query_labels)
    u = unique_query_labels.shape[0]
    if label_comparison_fn is EQUALITY:
        position = _match_index(reference_labels, unique_query_labels)
        counts = torch.bincount(position[position >= 0], minlength=u)
        return unique_query_labels, counts.to(torch.long)
    # A custom comparison may not be an equivalence: compare every unique label with every
    # reference label, a block of unique labels at a time to bound memory.
    m = max(1, reference_labels.shape[0])
    step = max(1, 2**22 // m)
    chunks = []
    for s in range(0, u, step):
        block = label_comparison_fn(unique_query_labels[s : s + step, None], reference_labels[None])
        chunks.append(block.reshape(block.shape[0], -1).sum(dim=1).to(torch.long))
    counts = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
    return unique_query_labels, counts.to(query_labels.device)


def get_lone_query_labels(query_labels, label_counts, ref_includes_query, label_comparison_fn):
    """``(lone_labels, not_lone_query_mask)``: a label is lone when no reference item other than
    the query itself matches it."""
    unique_labels, match_counts = _label_count_tensors(label_counts, query_labels.device)
    if ref_includes_query:
        matches_itself = relevance(unique_labels[:, None], unique_labels[:, None], label_comparison_fn)[:, 0]
        lone = match_counts - matches_itself.to(torch.long) <= 0
    else:
        lone = match_counts == 0
    lone_labels = unique_labels[lone]
    not_lone_query_mask = _match_index(query_labels, lone_labels) < 0
    return lone_labels, not_lone_query_mask


def try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask):
    """kNN labels and query labels of the non-lone queries, or ``(None, None)`` if there are none."""
    if not bool(torch.as_tensor(not_lone_query_mask).any()):
        return None, None
    return knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask]
