"""Retrieval and clustering accuracy of an embedding space: the ``AccuracyCalculator``.

Every query is ranked against a reference set by a k-nearest-neighbour search; a neighbour is
*relevant* when ``label_comparison_fn(query_label, neighbour_label)`` holds. With ``rel_i`` the
relevance of the i-th neighbour, ``R`` the number of relevant reference items of the query
(its label's match count, minus one for the query itself when ``ref_includes_query``),
``K`` the number of neighbours retrieved and ``P@i = (rel_1 + ... + rel_i) / i``:

* ``precision_at_1 = rel_1``
* ``r_precision = (sum_{i <= min(R, K)} rel_i) / min(R, K)``
* ``mean_average_precision_at_r = (1 / R) sum_{i <= min(R, K)} rel_i P@i``
  (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020)
* ``mean_average_precision = (1 / R) sum_{i <= K} rel_i P@i``
* ``mean_reciprocal_rank = 1 / (first i with rel_i)``, 0 when no neighbour is relevant
* ``NMI`` / ``AMI``: normalized / adjusted mutual information between the query labels and a
  k-means clustering of the queries into as many clusters as there are query labels.

Metrics the reference library lacks, one set per ``k`` in ``k_values`` (or named in ``include``):

* ``precision_at_<k> = (sum_{i <= k} rel_i) / k``
* ``recall_at_<k> = 1`` if any of the first ``k`` neighbours is relevant else 0 (the CMC curve
  at rank ``k``)
* ``mean_average_precision_at_<k> = (1 / min(R, k)) sum_{i <= k} rel_i P@i``

Queries whose label has no match in the reference set ("lone" queries) cannot retrieve anything
relevant and are left out of every k-NN metric. Per-query values are averaged over queries,
or per class then over classes (``avg_of_avgs``), or returned per class (``return_per_class``).

The k-NN metrics are computed from blocks of queries, so even ``k=None`` (rank the whole
reference set) never holds more than ``knn_block_entries`` neighbour labels at once. When most
of every ranking is wanted (``k=None`` or ``4 k >=`` the reference size) with the built-in
``ExactKNN`` and equality of labels, no row is sorted: the metrics need only the ranks of each
query's positives, which :mod:`.positive_ranks` counts directly (same ranks as the search,
ties included; rows it cannot settle go through the search).
"""

import functools
import re

import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError, MissingInputError, SearchInputError
from .inference import FaissKMeans
from .kmeans import TorchKMeans
from .knn import ExactKNN
from .positive_ranks import positive_ranks, supports_distance

EQUALITY = torch.eq

_AT_K_PATTERN = re.compile(r"^(precision|recall|mean_average_precision)_at_([1-9][0-9]*)$")
_AT_K_KINDS = ("precision", "recall", "mean_average_precision")
# k-NN metrics the block engine computes itself (unless a subclass overrides them).
_ENGINE_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
# Largest float32 range in which every integer is exact: labels beyond it are kept in float64.
_FLOAT32_EXACT_INT = 2**24


# ---------------------------------------------------------------------------------- label helpers
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


def _relevance(gt_labels, knn_labels, label_comparison_fn):
    """(N, K) bool: does neighbour j of query i match its label? ``gt_labels`` is (N, 1, ...)."""
    rel = label_comparison_fn(gt_labels, knn_labels)
    if rel.dim() > 2:
        # An elementwise comparison of multi-column labels: a match needs every column to agree.
        rel = c_f.torch_all_from_dim_to_end(rel, 2)
    return rel.bool()


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


# ------------------------------------------------------------------------- per-query kernels
def _per_query(rel, relevant, requests):
    """Per-query float64 values of the requested metrics.

    ``rel`` (B, K') bool relevance of the retrieved neighbours in rank order, ``relevant`` (B,)
    the number of relevant reference items per query. ``requests`` maps an output key to
    ``(kind, width)``: the metric ``kind`` computed on the first ``width`` columns. A ``width``
    beyond ``K'`` (fewer neighbours exist than asked for) counts the missing ones as misses:
    ``precision`` still divides by ``width`` and ``mean_average_precision_at_k`` by
    ``min(R, width)``.
    """
    device = rel.device
    out = {}
    cache = {}

    def precision_terms(width):
        # rel_i * P@i over the first `width` columns; prefixes of one cumsum serve every width.
        if "terms" not in cache:
            r = rel.to(torch.float64)
            ranks = torch.arange(1, rel.shape[1] + 1, device=device, dtype=torch.float64)
            cache["terms"] = r * torch.cumsum(r, dim=1) / ranks
        return cache["terms"][:, :width]

    r_count = relevant.to(torch.float64)
    for key, (kind, width) in requests.items():
        head = rel[:, :width]
        columns = head.shape[1]
        if kind == "precision":
            out[key] = head.sum(dim=1, dtype=torch.float64) / width
        elif kind == "recall":
            out[key] = head.any(dim=1).to(torch.float64)
        elif kind == "r_precision":
            within_r = torch.arange(columns, device=device) < relevant[:, None]
            hits = (head & within_r).sum(dim=1, dtype=torch.float64)
            out[key] = hits / within_r.sum(dim=1, dtype=torch.float64)
        elif kind == "mean_average_precision":
            out[key] = precision_terms(width).sum(dim=1) / r_count
        elif kind == "mean_average_precision_at_r":
            within_r = torch.arange(columns, device=device) < relevant[:, None]
            out[key] = (precision_terms(width) * within_r).sum(dim=1) / r_count
        elif kind == "mean_average_precision_at_k":
            denominator = torch.clamp(r_count, max=float(width))
            out[key] = precision_terms(width).sum(dim=1) / denominator
        elif kind == "mean_reciprocal_rank":
            first = torch.argmax(head.to(torch.uint8), dim=1).to(torch.float64) + 1
            out[key] = torch.where(head.any(dim=1), 1.0 / first, torch.zeros_like(first))
        else:
            raise ValueError(f"unknown per-query metric kind {kind!r}")
    return out


def _aggregate_one(kind, width, knn_labels, gt_labels, relevant, avg_of_avgs, return_per_class, cmp):
    rel = _relevance(gt_labels, knn_labels, cmp)
    if width is None:
        width = rel.shape[1]
    # Fewer than k neighbours still count as k slots (misses), as the reference does.
    values = _per_query(rel, relevant, {"v": (kind, width)})["v"]
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


# -------------------------------------------------------------- module metric functions (API)
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
    _, relevant = get_relevance_mask(knn_labels.shape[:2], gt_labels, ref_includes_query, label_counts)
    return _aggregate_one(
        "r_precision",
        None,
        knn_labels,
        gt_labels,
        relevant,
        avg_of_avgs,
        return_per_class,
        label_comparison_fn,
    )


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
    _, relevant = get_relevance_mask(knn_labels.shape[:2], gt_labels, ref_includes_query, label_counts)
    kind = "mean_average_precision_at_r" if at_r else "mean_average_precision"
    return _aggregate_one(
        kind, None, knn_labels, gt_labels, relevant, avg_of_avgs, return_per_class, label_comparison_fn
    )


def mean_reciprocal_rank(
    knn_labels, gt_labels, avg_of_avgs=False, return_per_class=False, label_comparison_fn=EQUALITY
):
    """Mean of ``1 / rank`` of the first relevant neighbour (0 when none is retrieved)."""
    relevant = torch.zeros(knn_labels.shape[0], dtype=torch.long, device=knn_labels.device)
    return _aggregate_one(
        "mean_reciprocal_rank",
        None,
        knn_labels,
        gt_labels,
        relevant,
        avg_of_avgs,
        return_per_class,
        label_comparison_fn,
    )


def precision_at_k(
    knn_labels, gt_labels, k, avg_of_avgs=False, return_per_class=False, label_comparison_fn=EQUALITY
):
    """Fraction of the first ``k`` neighbours that are relevant."""
    relevant = torch.zeros(knn_labels.shape[0], dtype=torch.long, device=knn_labels.device)
    return _aggregate_one(
        "precision", k, knn_labels, gt_labels, relevant, avg_of_avgs, return_per_class, label_comparison_fn
    )


def recall_at_k(
    knn_labels, gt_labels, k, avg_of_avgs=False, return_per_class=False, label_comparison_fn=EQUALITY
):
    """Fraction of queries with at least one relevant item among their first ``k`` neighbours
    (the CMC curve at rank ``k``). Not in the reference library."""
    relevant = torch.zeros(knn_labels.shape[0], dtype=torch.long, device=knn_labels.device)
    return _aggregate_one(
        "recall", k, knn_labels, gt_labels, relevant, avg_of_avgs, return_per_class, label_comparison_fn
    )


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
    _, relevant = get_relevance_mask(knn_labels.shape[:2], gt_labels, ref_includes_query, label_counts)
    return _aggregate_one(
        "mean_average_precision_at_k",
        k,
        knn_labels,
        gt_labels,
        relevant,
        avg_of_avgs,
        return_per_class,
        label_comparison_fn,
    )


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
        matches_itself = _relevance(unique_labels[:, None], unique_labels[:, None], label_comparison_fn)[:, 0]
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


def nan_accuracy(unique_labels, return_per_class):
    """The value of a k-NN metric when every query is lone."""
    if return_per_class:
        return [float("nan") for _ in range(len(unique_labels))]
    return float("nan")


def _own_entry_removed(distances, indices, own_index):
    """Drop each row's own reference entry (or its last column when the search missed it)."""
    is_own = indices == own_index[:, None]
    width = indices.shape[1]
    # Column of the first own entry (the last column when absent); shift the later columns left.
    position = torch.where(is_own.any(dim=1), is_own.to(torch.uint8).argmax(dim=1), width - 1)
    columns = torch.arange(width - 1, device=indices.device).unsqueeze(0)
    columns = columns + (columns >= position.unsqueeze(1))
    return distances.gather(1, columns.to(distances.device)), indices.gather(1, columns)


def _from_ranks(ranks, relevant, requests):
    """Per-query float64 values of the requested metrics (see :func:`_per_query`) from ``ranks``
    (B, R') float64: 1-based ranks of each query's positives in ascending order, ``inf`` padded."""
    r_count = relevant.to(torch.float64)
    positions = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    terms = positions / ranks  # P@rank_j at the j-th positive; 0 for padding
    first = ranks[:, 0]
    out = {}
    for key, (kind, width) in requests.items():
        if kind in ("r_precision", "mean_average_precision_at_r"):
            cutoff = torch.clamp(r_count, max=float(width))[:, None]
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


def default_kmeans_func(device):
    """The reference's k-means, ``FaissKMeans(niter=20, gpu=<device is CUDA>)``, when faiss can
    be imported; otherwise ``TorchKMeans(niter=20)``, faiss' algorithm with the same draws."""
    try:
        return FaissKMeans(niter=20, gpu=torch.device(device).type == "cuda")
    except ImportError:
        return TorchKMeans(niter=20)


# ----------------------------------------------------------------------------------- the class
class AccuracyCalculator:
    """Computes retrieval (k-NN) and clustering accuracy metrics of embeddings.

    Same API and metric definitions as pytorch-metric-learning's ``AccuracyCalculator``; see
    the module docstring for the formulas. Each method ``calculate_<name>`` defines a metric
    ``<name>`` (subclasses add their own; list them in ``requires_knn()`` to receive the k-NN
    keyword arguments, or in ``requires_clustering()`` for ``cluster_labels``).

    Args:
        include / exclude: metric names to compute / skip (tuples or lists). Empty include: all.
        avg_of_avgs: average per class, then over classes.
        return_per_class: return a list of per-class values (ascending label order).
        k: neighbours per query: ``None`` = the whole reference set, ``"max_bin_count"`` = the
            largest match count of a query label, or a positive int. R-precision and MAP@R are
            exact only when ``k`` is at least the largest match count.
        label_comparison_fn: ``fn(x, y) -> bool tensor`` deciding relevance (default ``torch.eq``).
        device: where labels and embeddings are compared (default: CUDA if available).
        knn_func: ``fn(query, k, reference, ref_includes_query) -> (distances, indices)``.
            Default :class:`~deepmetric.utils.knn.ExactKNN` (squared Euclidean, like faiss's
            ``IndexFlatL2``); no faiss needed.
        kmeans_func: ``fn(x, n_clusters) -> cluster ids`` for NMI/AMI. Default: the
            reference's, ``FaissKMeans(niter=20, gpu=<device is CUDA>)``, when faiss is
            installed, else :class:`~deepmetric.utils.kmeans.TorchKMeans` ``(niter=20)``, the
            same algorithm and seed in torch.
        k_values: extra cut-offs; each ``k`` adds ``precision_at_<k>``, ``recall_at_<k>`` and
            ``mean_average_precision_at_<k>`` (naming such a metric in ``include`` adds it too).
        knn_block_entries: at most this many neighbour labels (queries x neighbours) are held at
            once; queries are searched and scored block by block.
    """

    def __init__(
        self,
        include=(),
        exclude=(),
        avg_of_avgs=False,
        return_per_class=False,
        k=None,
        label_comparison_fn=None,
        device=None,
        knn_func=None,
        kmeans_func=None,
        k_values=(),
        knn_block_entries=2**23,
    ):
        self.function_keyword = "calculate_"
        names = [x for x in dir(self) if x.startswith(self.function_keyword)]
        self.original_function_dict = {
            name[len(self.function_keyword) :]: getattr(self, name) for name in names
        }
        self._at_k_metrics = {}
        self._register_at_k(k_values, include, exclude)
        self.check_primary_metrics(include, exclude)
        self.original_function_dict = self.get_function_dict(include, exclude)
        self.curr_function_dict = self.get_function_dict()

        if avg_of_avgs and return_per_class:
            raise ValueError("avg_of_avgs and return_per_class are mutually exclusive")
        self.avg_of_avgs = avg_of_avgs
        self.return_per_class = return_per_class

        if device is None:
            device = c_f.use_cuda_if_available()
        self.device = torch.device(device)
        self.knn_func = ExactKNN() if knn_func is None else knn_func
        self.kmeans_func = default_kmeans_func(self.device) if kmeans_func is None else kmeans_func

        if (isinstance(k, bool) or not (isinstance(k, int) and k > 0)) and k not in (None, "max_bin_count"):
            raise ValueError(f"k must be an integer greater than 0, or None, or 'max_bin_count', got {k!r}")
        self.k = k
        if (
            isinstance(knn_block_entries, bool)
            or not isinstance(knn_block_entries, int)
            or knn_block_entries < 1
        ):
            raise ValueError(f"knn_block_entries must be a positive int, got {knn_block_entries!r}")
        self.knn_block_entries = knn_block_entries
        # The sort-free engine for long rankings; tests switch it off to compare with the search.
        self._use_positive_ranks = True

        if label_comparison_fn:
            self.label_comparison_fn = label_comparison_fn
            if any(x in self.requires_clustering() for x in self.get_curr_metrics()):
                raise NotImplementedError(
                    "Unsupported: clustering + custom label comparison "
                    "(exclude 'NMI' and 'AMI' to use label_comparison_fn)"
                )
        else:
            self.label_comparison_fn = EQUALITY

    # ------------------------------------------------------------------ metric selection
    def _register_at_k(self, k_values, include, exclude):
        if not isinstance(k_values, (tuple, list)):
            raise TypeError(
                f"k_values must be a tuple or list of positive ints, got {type(k_values).__name__}"
            )
        for value in k_values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"k_values must contain positive ints, got {value!r}")
        requested = []
        for value in sorted(set(k_values)):
            requested += [f"{kind}_at_{value}" for kind in _AT_K_KINDS]
        for group in (include, exclude):
            if isinstance(group, (tuple, list)):
                requested += [x for x in group if isinstance(x, str) and _AT_K_PATTERN.match(x)]
        for name in requested:
            if name in self.original_function_dict:
                continue  # a built-in (precision_at_1) or a subclass's own calculate_ method
            kind, value = _AT_K_PATTERN.match(name).groups()
            self._at_k_metrics[name] = (kind, int(value))
            self.original_function_dict[name] = functools.partial(self._calculate_at_k, kind, int(value))

    def get_function_dict(self, include=(), exclude=()):
        if len(include) == 0:
            include = list(self.original_function_dict.keys())
        included = [k for k in include if k not in exclude]
        return {k: v for k, v in self.original_function_dict.items() if k in included}

    def get_curr_metrics(self):
        return list(self.curr_function_dict.keys())

    def requires_clustering(self):
        return ["NMI", "AMI"]

    def requires_knn(self):
        return [
            "precision_at_1",
            "mean_average_precision",
            "mean_average_precision_at_r",
            "r_precision",
        ] + list(self._at_k_metrics)

    def check_primary_metrics(self, include=(), exclude=()):
        allowed = list(self.original_function_dict.keys())
        for group in (include, exclude):
            if not isinstance(group, (tuple, list)):
                raise TypeError(f"Arguments must be of type tuple, not {type(group)}.")
            unknown = [x for x in group if x not in allowed]
            if unknown:
                raise ValueError(
                    f"Unknown metric name(s) {unknown}. Primary metrics must be one or more of: {allowed}, "
                    "or precision_at_<k>, recall_at_<k>, mean_average_precision_at_<k>."
                )

    def description(self):
        return "avg_of_avgs" if self.avg_of_avgs else ""

    def _knn_metrics(self):
        # MRR needs neighbours too; the reference forgets it in requires_knn() (then crashes).
        return set(self.requires_knn()) | {"mean_reciprocal_rank"}

    def _engine_request(self, name, base_k):
        """``(kind, width)`` when the block engine may compute ``name``, else None."""
        if name in self._at_k_metrics:
            kind, value = self._at_k_metrics[name]
            return ("mean_average_precision_at_k" if kind == "mean_average_precision" else kind), value
        if name in _ENGINE_METRICS:
            method = self.function_keyword + name
            if getattr(type(self), method) is getattr(AccuracyCalculator, method):
                return ("precision" if name == "precision_at_1" else name), (
                    1 if name == "precision_at_1" else base_k
                )
        return None

    # ------------------------------------------------------------------ built-in metrics
    def get_cluster_labels(self, query, query_labels, **kwargs):
        num_clusters = len(torch.unique(query_labels.flatten()))
        return self.kmeans_func(query, num_clusters)

    def calculate_NMI(self, query_labels, cluster_labels, **kwargs):
        return normalized_mutual_info_score(c_f.to_numpy(query_labels), c_f.to_numpy(cluster_labels))

    def calculate_AMI(self, query_labels, cluster_labels, **kwargs):
        return adjusted_mutual_info_score(c_f.to_numpy(query_labels), c_f.to_numpy(cluster_labels))

    def _not_lone_or_nan(self, knn_labels, query_labels, not_lone_query_mask, label_counts):
        knn_labels, query_labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
        if knn_labels is None:
            return None, None, nan_accuracy(label_counts[0], self.return_per_class)
        return knn_labels, query_labels[:, None], None

    def calculate_precision_at_1(self, knn_labels, query_labels, not_lone_query_mask, label_counts, **kwargs):
        knn, gt, nan = self._not_lone_or_nan(knn_labels, query_labels, not_lone_query_mask, label_counts)
        if knn is None:
            return nan
        return precision_at_k(knn, gt, 1, self.avg_of_avgs, self.return_per_class, self.label_comparison_fn)

    def calculate_mean_average_precision_at_r(
        self, knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, **kwargs
    ):
        knn, gt, nan = self._not_lone_or_nan(knn_labels, query_labels, not_lone_query_mask, label_counts)
        if knn is None:
            return nan
        return mean_average_precision(
            knn,
            gt,
            ref_includes_query,
            label_counts,
            self.avg_of_avgs,
            self.return_per_class,
            self.label_comparison_fn,
            at_r=True,
        )

    def calculate_mean_average_precision(
        self, knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, **kwargs
    ):
        knn, gt, nan = self._not_lone_or_nan(knn_labels, query_labels, not_lone_query_mask, label_counts)
        if knn is None:
            return nan
        return mean_average_precision(
            knn,
            gt,
            ref_includes_query,
            label_counts,
            self.avg_of_avgs,
            self.return_per_class,
            self.label_comparison_fn,
        )

    def calculate_mean_reciprocal_rank(
        self, knn_labels, query_labels, not_lone_query_mask, label_counts, **kwargs
    ):
        knn, gt, nan = self._not_lone_or_nan(knn_labels, query_labels, not_lone_query_mask, label_counts)
        if knn is None:
            return nan
        return mean_reciprocal_rank(
            knn, gt, self.avg_of_avgs, self.return_per_class, self.label_comparison_fn
        )

    def calculate_r_precision(
        self, knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, **kwargs
    ):
        knn, gt, nan = self._not_lone_or_nan(knn_labels, query_labels, not_lone_query_mask, label_counts)
        if knn is None:
            return nan
        return r_precision(
            knn,
            gt,
            ref_includes_query,
            label_counts,
            self.avg_of_avgs,
            self.return_per_class,
            self.label_comparison_fn,
        )

    def _calculate_at_k(
        self,
        kind,
        k,
        knn_labels,
        query_labels,
        not_lone_query_mask,
        ref_includes_query,
        label_counts,
        **kwargs,
    ):
        knn, gt, nan = self._not_lone_or_nan(knn_labels, query_labels, not_lone_query_mask, label_counts)
        if knn is None:
            return nan
        args = (self.avg_of_avgs, self.return_per_class, self.label_comparison_fn)
        if kind == "precision":
            return precision_at_k(knn, gt, k, *args)
        if kind == "recall":
            return recall_at_k(knn, gt, k, *args)
        return mean_average_precision_at_k(knn, gt, k, ref_includes_query, label_counts, *args)

    # ------------------------------------------------------------------ main entry point
    def _to_tensor(self, x, name, is_labels):
        if x is None:
            raise MissingInputError(f"{name} must be given")
        x = c_f.numpy_to_torch(x)
        if not torch.is_tensor(x):
            x = torch.as_tensor(x)
        x = x.to(self.device)
        if is_labels:
            if x.dtype == torch.bool or x.is_complex():
                raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
            needs_64 = not x.is_floating_point() and x.numel() > 0 and int(x.abs().max()) > _FLOAT32_EXACT_INT
            return x.to(torch.float64 if needs_64 else torch.float32)
        if x.dim() != 2:
            raise SearchInputError(f"{name} must be a 2-D (N, D) tensor, got shape {tuple(x.shape)}")
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise SearchInputError(f"{name} contains NaN or Inf values")
        return x

    def get_accuracy(
        self,
        query,
        query_labels,
        reference=None,
        reference_labels=None,
        ref_includes_query=False,
        include=(),
        exclude=(),
    ):
        if reference is None:
            reference, reference_labels = query, query_labels
            ref_includes_query = True
        query = self._to_tensor(query, "query", False)
        reference = self._to_tensor(reference, "reference", False)
        query_labels = self._to_tensor(query_labels, "query_labels", True)
        reference_labels = self._to_tensor(reference_labels, "reference_labels", True)
        if query_labels.dtype != reference_labels.dtype:
            query_labels, reference_labels = query_labels.double(), reference_labels.double()

        if len(query) != len(query_labels) or len(reference) != len(reference_labels):
            raise ValueError(
                "embeddings and labels must have the same length: "
                f"query {len(query)} vs query_labels {len(query_labels)}, "
                f"reference {len(reference)} vs reference_labels {len(reference_labels)}"
            )
        if len(query) == 0 or len(reference) == 0:
            raise SearchInputError("query and reference must contain at least one embedding each")
        if query.shape[1] != reference.shape[1]:
            raise SearchInputError(
                f"query and reference must have the same width, got {query.shape[1]} and {reference.shape[1]}"
            )
        if ref_includes_query and not (
            len(reference) >= len(query)
            and query_labels.shape[1:] == reference_labels.shape[1:]
            and torch.allclose(query, reference[: len(query)])
            and torch.allclose(query_labels, reference_labels[: len(query)])
        ):
            raise ValueError(
                "When ref_includes_query is True, the first len(query) elements of reference must be equal "
                "to query.\nLikewise, the first len(query_labels) elements of reference_labels must be equal "
                "to query_labels.\n"
            )

        self.curr_function_dict = self.get_function_dict(include, exclude)
        kwargs = {
            "query": query,
            "reference": reference,
            "query_labels": query_labels,
            "reference_labels": reference_labels,
            "ref_includes_query": ref_includes_query,
            "label_comparison_fn": self.label_comparison_fn,
        }
        precomputed = {}
        knn_names = [x for x in self.get_curr_metrics() if x in self._knn_metrics()]
        if knn_names:
            precomputed = self._knn_metrics_and_kwargs(knn_names, kwargs)
        if any(x in self.requires_clustering() for x in self.get_curr_metrics()):
            kwargs["cluster_labels"] = self.get_cluster_labels(**kwargs)

        rest = {k: v for k, v in self.curr_function_dict.items() if k not in precomputed}
        computed = self._get_accuracy(rest, **kwargs)
        return {k: precomputed[k] if k in precomputed else computed[k] for k in self.curr_function_dict}

    def _knn_metrics_and_kwargs(self, knn_names, kwargs):
        """Run the k-NN search; fills the k-NN kwargs and returns the metrics computed blockwise."""
        query, reference = kwargs["query"], kwargs["reference"]
        query_labels, reference_labels = kwargs["query_labels"], kwargs["reference_labels"]
        ref_includes_query = kwargs["ref_includes_query"]
        cmp = self.label_comparison_fn
        own = int(bool(ref_includes_query))

        label_counts = get_label_match_counts(query_labels, reference_labels, cmp)
        lone_labels, not_lone = get_lone_query_labels(query_labels, label_counts, ref_includes_query, cmp)
        base_k = self.determine_k(label_counts[1], len(reference), ref_includes_query)
        available = len(reference) - own

        requests = {name: self._engine_request(name, min(base_k, available)) for name in knn_names}
        engine = {name: req for name, req in requests.items() if req is not None}
        others = [name for name in knn_names if name not in engine]
        widest = max([base_k] + [req[1] for req in engine.values()])
        if widest > available:
            # The reference pads faiss' missing neighbours with index -1 (read as the label of the
            # last reference); only the neighbours that exist are used here.
            extra = " other than the query itself" if own else ""
            c_f.LOGGER.warning(
                f"k={widest} is more than the {available} reference embeddings{extra}: "
                f"the metrics use the {available} that exist (precision_at_<k> counts the "
                "missing ones as misses)"
            )
        base_k, width = min(base_k, available), min(widest, available)
        any_valid = bool(not_lone.any())
        if not any_valid:
            c_f.LOGGER.warning("None of the query labels are in the reference set.")

        kwargs["label_counts"] = label_counts
        kwargs["lone_query_labels"] = lone_labels
        kwargs["not_lone_query_mask"] = not_lone
        _, inverse = torch.unique(query_labels, dim=0, return_inverse=True)
        relevant_all = label_counts[1][inverse.reshape(-1)] - own

        full = None
        if others:
            # Metrics of subclasses need every neighbour label at once, as in the reference.
            if width >= 1:
                distances, indices = self.knn_func(query, width, reference, ref_includes_query)
            else:
                distances = torch.zeros(len(query), 0, device=query.device)
                indices = torch.zeros(len(query), 0, dtype=torch.long, device=query.device)
            indices = indices.to(reference_labels.device)
            kwargs["knn_distances"] = distances[:, :base_k]
            kwargs["knn_labels"] = reference_labels[indices[:, :base_k]]
            full = reference_labels[indices]

        if not engine:
            return {}
        if not any_valid:
            return {name: nan_accuracy(label_counts[0], self.return_per_class) for name in engine}

        valid_rows = torch.nonzero(not_lone).reshape(-1)
        gt = query_labels[valid_rows][:, None]
        relevant = relevant_all[valid_rows]
        if full is not None:
            values = _per_query(_relevance(gt, full[valid_rows], cmp), relevant, engine)
        elif self._positive_ranks_apply(width, available, query_labels, reference_labels):
            self._log_search(width + own, query)
            labels = (query_labels, reference_labels)
            values = self._rankwise(query, reference, labels, valid_rows, gt, relevant, engine, width, own)
        else:
            self._log_search(width + own, query)
            values = self._blockwise(
                query, reference, reference_labels, valid_rows, gt, relevant, engine, width, own
            )
        return {
            name: maybe_get_avg_of_avgs(v, gt, self.avg_of_avgs, self.return_per_class)
            for name, v in values.items()
        }

    def _log_search(self, k, query):
        """What the reference's default search logs, once per evaluation (``ExactKNN`` itself
        logs each call, and the blockwise search makes one call per block)."""
        if type(self.knn_func) is ExactKNN:
            c_f.LOGGER.info("running k-nn with k=%d", k)
            c_f.LOGGER.info("embedding dimensionality is %d", query.shape[1])

    def _positive_ranks_apply(self, width, available, query_labels, reference_labels):
        """Whether the sort-free positive-rank engine gives what the blockwise search would: the
        built-in exact search and equality of labels, with most of every row ranked anyway."""
        knn = self.knn_func
        return (
            getattr(self, "_use_positive_ranks", True)
            and type(knn) is ExactKNN
            and self.label_comparison_fn is EQUALITY
            and 4 * width >= available
            and supports_distance(knn.distance)
            and not bool(torch.isnan(query_labels).any() or torch.isnan(reference_labels).any())
        )

    def _rankwise(self, query, reference, labels, rows, gt, relevant, requests, width, own):
        """Per-query metrics from the ranks of each query's positives (:mod:`.positive_ranks`);
        rows whose ranks hinge on tied keys go through :meth:`_blockwise` instead."""
        query_labels, reference_labels = labels
        nq = len(query_labels)
        # Class ids shared by queries and references (adding 0.0 merges -0.0 into 0.0, as == does).
        both = torch.cat([query_labels, reference_labels]) + 0.0
        _, ids = torch.unique(both, dim=0 if both.dim() > 1 else None, return_inverse=True)
        ids = ids.reshape(-1)
        query_ids, reference_ids = ids[:nq][rows], ids[nq:]
        own_columns = rows if own else None  # query i is reference i
        block = max(1, self.knn_block_entries // len(reference))
        out = {name: torch.empty(len(rows), dtype=torch.float64, device=query.device) for name in requests}
        pending = []
        blocks = positive_ranks(
            query[rows], reference, query_ids, reference_ids, own_columns, self.knn_func.distance, block
        )
        for local, ranks, unresolved in blocks:
            count = relevant[local]
            unresolved = unresolved | (torch.isfinite(ranks).sum(dim=1) != count)
            for name, v in _from_ranks(ranks, count, requests).items():
                out[name][local] = v
            pending.append(local[unresolved])
        pending = torch.cat(pending)
        if len(pending):
            exact = self._blockwise(
                query, reference, reference_labels, rows[pending], gt[pending], relevant[pending], requests,
                width, own,
            )
            for name, v in exact.items():
                out[name][pending] = v
        return out

    def _blockwise(self, query, reference, reference_labels, rows, gt, relevant, requests, width, own):
        # The built-in search without its per-call log lines (logged once by _log_search).
        search = self.knn_func.search if type(self.knn_func) is ExactKNN else self.knn_func
        block = max(1, self.knn_block_entries // max(1, width))
        parts = {name: [] for name in requests}
        for s in range(0, len(rows), block):
            e = min(s + block, len(rows))
            block_rows = rows[s:e]
            # Self matches are removed here by position, so the search must not do it by row number.
            distances, indices = search(query[block_rows], width + own, reference, False)
            if own:
                distances, indices = _own_entry_removed(distances, indices, block_rows.to(indices.device))
            rel = _relevance(
                gt[s:e], reference_labels[indices.to(reference_labels.device)], self.label_comparison_fn
            )
            for name, v in _per_query(rel, relevant[s:e], requests).items():
                parts[name].append(v)
        return {name: torch.cat(v) for name, v in parts.items()}

    def _get_accuracy(self, function_dict, **kwargs):
        return {k: v(**kwargs) for k, v in function_dict.items()}

    def determine_k(self, bin_counts, num_reference_embeddings, ref_includes_query):
        self_count = int(bool(ref_includes_query))
        max_bin_count = int(torch.max(bin_counts).item()) if bin_counts.numel() else 0
        if self.k == "max_bin_count":
            return max_bin_count - self_count
        if self.k is None:
            return num_reference_embeddings - self_count
        if self.k < max_bin_count:
            inexact = set(self.get_curr_metrics()) & {"r_precision", "mean_average_precision_at_r"}
            if inexact:
                c_f.LOGGER.warning(
                    f"\nWarning: You are computing {inexact}, but the value for k ({self.k}) is less "
                    f"than the max bin count ({max_bin_count}) so the values for these metrics will be "
                    "incorrect. To fix this, set k='max_bin_count'.\nIf you're looking for "
                    f"MAP@{self.k} instead of MAP@R, then you should use 'mean_average_precision' rather "
                    "than mean_average_precision_at_r"
                )
        return self.k
