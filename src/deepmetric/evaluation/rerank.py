"""Post-processing of a nearest-neighbour ranking: k-reciprocal re-ranking and query expansion.

**k-reciprocal re-ranking** (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), as torchreid's ``re_ranking`` computes it. Over the ``N`` items of query
and reference together, with ``d(i, j)`` the distance and ``o(i, j) = d(i, j)^2 / max_l
d(i, l)^2``:

* ``R(i, k)``: the ``k + 1`` nearest items of ``i`` (itself included); ``j`` is a k-reciprocal
  neighbour of ``i`` when ``j`` is in ``R(i, k1)`` and ``i`` in ``R(j, k1)``;
* the expansion ``E(i)``: the k-reciprocal neighbours of ``i``, plus, for each of them ``c``, the
  ``round(k1 / 2)``-reciprocal neighbours ``H(c)`` of ``c`` when more than 2/3 of ``H(c)`` are
  k-reciprocal neighbours of ``i``;
* ``V(i, j) = exp(-o(i, j)) / sum_{l in E(i)} exp(-o(i, l))`` for ``j`` in ``E(i)``, else 0;
  then (``k2 > 1``) ``V(i)`` is replaced by the mean of ``V(m)`` over the ``k2`` nearest ``m``;
* ``s(i, j) = sum_l min(V(i, l), V(j, l))``, the Jaccard distance ``J = 1 - s / (2 - s)`` and
  the final distance ``(1 - lambda) J + lambda o(i, j)``.

Every set above lies in the ``k1 + 1`` nearest items of an item or of its neighbours, so ``V`` is
sparse (``O(N k1)`` entries) and is built from the neighbour lists alone; the dense formulation
holds several ``N x N`` matrices. Only the queries' final distances are needed: they are computed
a block of queries at a time, and the ``k`` smallest of each row kept (equal values: lower
reference index first).

**Query expansion.** Average query expansion (AQE; Chum et al., ICCV 2007) replaces each query by
the mean of itself and its ``n`` nearest references; alpha-QE (Radenovic et al., TPAMI 2018)
weighs reference ``g`` by ``max(sim(q, g), 0) ** alpha`` (``alpha = 0``: AQE); the result is
L2-normalised. Database-side augmentation (DBA) does the same to every reference with its own
nearest references (itself first).
"""

import torch

from ..distances import CosineSimilarity
from ..utils.errors import ArgumentError
from .knn import default_distance, drop_own_entry, exact_knn
from .verification import checked_embeddings, memory_budget


def k_reciprocal_rerank(
    query,
    reference,
    k=100,
    k1=20,
    k2=6,
    lambda_value=0.3,
    distance=None,
    memory_budget_bytes=None,
):
    """``(distances, indices)``, each ``(Nq, k)``: the ``k`` references of smallest re-ranked
    distance for each query, smallest first (module docstring).

    Args:
        query, reference: ``(Nq, D)`` and ``(Ng, D)`` embeddings.
        k: references kept per query (at most ``Ng``).
        k1, k2, lambda_value: the method's parameters (torchreid's defaults 20, 6, 0.3).
        distance: a deepmetric distance (not a similarity); default squared Euclidean, what
            torchreid's ``compute_distance_matrix(..., "euclidean")`` passes to ``re_ranking``.
        memory_budget_bytes: scratch memory for one block of queries (default 128 MiB).
    """
    distance = default_distance() if distance is None else distance
    if distance.is_inverted:
        raise ArgumentError(
            f"distance must be a distance (smaller means more alike), got the similarity "
            f"{type(distance).__name__}; use a distance such as LpDistance"
        )
    for name, value in (("k", k), ("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name} must be a positive int, got {value!r}")
    number = isinstance(lambda_value, (int, float)) and not isinstance(lambda_value, bool)
    if not number or not 0 <= lambda_value <= 1:
        raise ArgumentError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")
    query, reference = checked_embeddings(query, "query"), checked_embeddings(reference, "reference")
    if query.shape[1] != reference.shape[1]:
        raise ArgumentError(
            f"query and reference must have the same width, got {query.shape[1]} and {reference.shape[1]}"
        )
    dtype = query.dtype
    x = torch.cat([query, reference.to(query.device)]).double()
    nq, n = len(query), len(x)
    k = min(k, n - nq)
    budget = memory_budget(memory_budget_bytes, query.device)
    with torch.no_grad():
        _, rank = exact_knn(x, min(n, max(k1 + 1, k2)), x, distance=distance)
        row_max = _row_max_squared(x, distance, budget)
        v = _encoding(x, rank, row_max, distance, k1, budget)
        if k2 > 1:
            v = _average_rows(v, rank[:, :k2])
        return _final_topk(x, nq, v, row_max, distance, k, lambda_value, budget, dtype)


def _values(distance, a, b):
    """The distance of row ``t`` of ``a`` and row ``t`` of ``b``."""
    value = distance.pairwise_distance(distance.maybe_normalize(a), distance.maybe_normalize(b))
    return value if distance.power == 1 else value**distance.power


def _row_max_squared(x, distance, budget):
    rows = max(1, budget // (16 * len(x)))
    return torch.cat([distance(x[s : s + rows], x).amax(dim=1) ** 2 for s in range(0, len(x), rows)])


def _reciprocal(rank, width):
    """``(lists, mask)``: the ``width`` nearest of each item and which are reciprocal."""
    lists = rank[:, :width]
    items = torch.arange(len(rank), device=rank.device)[:, None, None]
    return lists, (lists[lists] == items).any(dim=-1)


def _encoding(x, rank, row_max, distance, k1, budget):
    """The sparse ``V``: ``(rows, cols, values)`` sorted by row then column, float64."""
    n = len(x)
    lists, mask = _reciprocal(rank, min(n, k1 + 1))
    half_lists, half_mask = _reciprocal(rank, min(n, round(k1 / 2) + 1))
    width, half = lists.shape[1], half_lists.shape[1]
    rows_per_block = max(1, budget // (8 * width * width * half + 1))
    entries = []
    for s in range(0, n, rows_per_block):
        own, own_mask = lists[s : s + rows_per_block], mask[s : s + rows_per_block]
        b = len(own)
        members = half_lists[own]  # (b, width, half): H of each candidate
        members_mask = half_mask[own]
        in_own = (members[..., None] == own[:, None, None, :]) & own_mask[:, None, None, :]
        shared = (in_own.any(dim=-1) & members_mask).sum(dim=-1)
        accepted = own_mask & (shared > 2.0 / 3.0 * members_mask.sum(dim=-1))
        sentinel = torch.full_like(own, n)
        first = torch.where(own_mask, own, sentinel)
        extra = torch.where(members_mask & accepted[..., None], members, n).reshape(b, -1)
        expansion = torch.sort(torch.cat([first, extra], dim=1), dim=1).values
        keep = expansion < n
        keep[:, 1:] &= expansion[:, 1:] != expansion[:, :-1]
        row, col = keep.nonzero(as_tuple=True)
        row_global, col_global = row + s, expansion[row, col]
        o = _values(distance, x[row_global], x[col_global]) ** 2 / row_max[row_global]
        weight = torch.exp(-o)
        total = torch.zeros(b, dtype=weight.dtype, device=weight.device).index_add_(0, row, weight)
        entries.append((row_global, col_global, weight / total[row]))
    rows, cols, values = (torch.cat(part) for part in zip(*entries))
    return _coalesced(rows, cols, values, n)


def _coalesced(rows, cols, values, n):
    """``(rows, cols, values)`` sorted by row then column, duplicate entries summed: a sparse
    ``N x N`` matrix in three flat tensors."""
    keys, inverse = torch.unique(rows * n + cols, sorted=True, return_inverse=True)
    summed = torch.zeros(len(keys), dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    return keys // n, keys % n, summed


def _average_rows(v, neighbours):
    """Row ``i`` becomes the mean of the rows ``neighbours[i]``."""
    rows, cols, values = v
    n, count = len(neighbours), neighbours.shape[1]
    row_start = torch.searchsorted(rows, torch.arange(n + 1, device=rows.device))
    source = neighbours.reshape(-1)
    sizes = row_start[source + 1] - row_start[source]
    pair = torch.repeat_interleave(torch.arange(len(source), device=rows.device), sizes)
    offset = torch.arange(len(pair), device=rows.device) - torch.repeat_interleave(
        torch.cumsum(sizes, 0) - sizes, sizes
    )
    entry = row_start[source[pair]] + offset
    return _coalesced(pair // count, cols[entry], values[entry] / count, n)


def _final_topk(x, nq, v, row_max, distance, k, lambda_value, budget, dtype):
    n = len(x)
    ng = n - nq
    rows, cols, values = v
    # the entries of the reference rows, by column: the other side of each sum of minima
    gallery = rows >= nq
    g_rows, g_cols, g_values = rows[gallery], cols[gallery], values[gallery]
    order = torch.argsort(g_cols, stable=True)
    g_rows, g_cols, g_values = g_rows[order], g_cols[order], g_values[order]
    block = max(1, budget // (48 * ng))
    out_values, out_indices = [], []
    for s in range(0, nq, block):
        e = min(nq, s + block)
        lo, hi = torch.searchsorted(rows, torch.tensor([s, e], device=rows.device))
        q_rows, q_cols, q_values = rows[lo:hi], cols[lo:hi], values[lo:hi]
        start = torch.searchsorted(g_cols, q_cols, side="left")
        count = torch.searchsorted(g_cols, q_cols, side="right") - start
        entry = torch.repeat_interleave(torch.arange(len(q_cols), device=rows.device), count)
        offset = torch.arange(len(entry), device=rows.device) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        partner = start[entry] + offset
        shared = torch.zeros((e - s) * ng, dtype=torch.float64, device=rows.device)
        flat = (q_rows[entry] - s) * ng + (g_rows[partner] - nq)
        shared.index_add_(0, flat, torch.minimum(q_values[entry], g_values[partner]))
        shared = shared.reshape(e - s, ng)
        jaccard = 1 - shared / (2 - shared)
        original = distance(x[s:e], x[nq:]) ** 2 / row_max[s:e, None]
        final = jaccard * (1 - lambda_value) + original * lambda_value
        sorted_values, sorted_indices = torch.sort(final, dim=1, stable=True)
        out_values.append(sorted_values[:, :k])
        out_indices.append(sorted_indices[:, :k])
    return torch.cat(out_values).to(dtype), torch.cat(out_indices)


# ------------------------------------------------------------------------------ query expansion
def query_expansion(query, reference, n=1, alpha=0.0, distance=None, memory_budget_bytes=None):
    """Expanded queries ``(Nq, D)``: ``normalize(q + sum_{t<n} w_t g_t)`` over the ``n`` nearest
    references ``g_t`` of ``q`` by ``distance`` (default cosine similarity), ``w_t =
    max(sim(q, g_t), 0) ** alpha`` (``alpha = 0``: AQE, every ``w_t = 1``). Search the expanded
    queries as the originals."""
    distance = CosineSimilarity() if distance is None else distance
    query, reference = checked_embeddings(query, "query"), checked_embeddings(reference, "reference")
    _check_expansion(n, alpha, len(reference))
    with torch.no_grad():
        values, indices = exact_knn(query, n, reference, distance=distance,
                                    memory_budget_bytes=memory_budget_bytes)
        return _expanded(query, reference, values, indices, alpha, distance)


def database_augmentation(reference, n=2, alpha=0.0, distance=None, memory_budget_bytes=None):
    """DBA: each reference replaced by ``normalize(sum_{t<n} w_t g_t)`` over its ``n`` nearest
    references, itself first (weight 1); weights as :func:`query_expansion`."""
    distance = CosineSimilarity() if distance is None else distance
    reference = checked_embeddings(reference, "reference")
    _check_expansion(n, alpha, len(reference))
    with torch.no_grad():
        values, indices = exact_knn(reference, n, reference, distance=distance,
                                    memory_budget_bytes=memory_budget_bytes)
        return _expanded(None, reference, values, indices, alpha, distance)


def _check_expansion(n, alpha, size):
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= size:
        raise ArgumentError(f"n must be an int in [1, {size}] (the reference size), got {n!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ArgumentError(f"alpha must be a number >= 0, got {alpha!r}")


def _expanded(query, reference, values, indices, alpha, distance):
    if alpha == 0:
        weights = torch.ones_like(values)
    else:
        if not distance.is_inverted:
            raise ArgumentError("alpha-QE weighs by similarity: distance must be a similarity")
        weights = values.clamp(min=0) ** alpha
    total = (weights[..., None] * reference[indices]).sum(dim=1)
    if query is not None:
        total = total + query
    return torch.nn.functional.normalize(total, dim=1)


# ------------------------------------------------------------------------------ as k-NN functions
class KReciprocalRerank:
    """Re-ranking as a post-processing step of ``AccuracyCalculator(postprocess=...)``: called
    with the calculator's k-NN function, it returns a k-NN function (same call) whose neighbours
    are the re-ranked ones (:func:`k_reciprocal_rerank`, with the k-NN function's ``distance``
    when it has one and ``distance`` is not given)."""

    def __init__(self, k1=20, k2=6, lambda_value=0.3, distance=None):
        self.k1, self.k2, self.lambda_value, self.distance = k1, k2, lambda_value, distance

    def __call__(self, knn_func):
        return _PostprocessedKNN(self, knn_func)

    def search(self, knn_func, query, k, reference, own):
        distance = self.distance or getattr(knn_func, "distance", None)
        return k_reciprocal_rerank(query, reference, k + own, self.k1, self.k2, self.lambda_value, distance)


class QueryExpansion:
    """Query expansion (AQE, or alpha-QE with ``alpha > 0``) as a post-processing step of
    ``AccuracyCalculator(postprocess=...)``: each query is expanded with its ``n`` nearest
    references by ``similarity`` (default cosine), then searched with the calculator's k-NN
    function. When the reference holds the queries, a query's nearest reference is itself."""

    def __init__(self, n=1, alpha=0.0, similarity=None):
        self.n, self.alpha, self.similarity = n, alpha, similarity

    def __call__(self, knn_func):
        return _PostprocessedKNN(self, knn_func)

    def search(self, knn_func, query, k, reference, own):
        expanded = query_expansion(query, reference, self.n, self.alpha, self.similarity)
        return knn_func(expanded.to(query.dtype), k + own, reference, False)


class _PostprocessedKNN:
    """A k-NN function (``fn(query, k, reference, ref_includes_query)``) running a
    post-processing step's search; ``distance`` is the wrapped function's. Without a reference
    it searches the wrapped function's stored index (``train``, ``add``, ``save``, ``load`` and
    ``reset`` are the wrapped function's), so ``InferenceModel(knn_func=KReciprocalRerank()(
    ExactKNN()))`` re-ranks its searches."""

    # the calculator must not bypass the step with the wrapped function's own fast paths
    search = None
    positive_ranks = None

    def __init__(self, step, knn_func):
        self.step, self.knn_func = step, knn_func
        self.distance = getattr(knn_func, "distance", None)

    @property
    def index(self):
        return getattr(self.knn_func, "index", None)

    def train(self, embeddings):
        self.knn_func.train(embeddings)

    def add(self, embeddings):
        self.knn_func.add(embeddings)

    def save(self, filename):
        self.knn_func.save(filename)

    def load(self, filename):
        self.knn_func.load(filename)

    def reset(self):
        self.knn_func.reset()

    def __call__(self, query, k, reference=None, ref_includes_query=False):
        if reference is None:
            if isinstance(self.index, torch.Tensor):
                reference = self.index
            else:
                reference, ref_includes_query = query, True
        own = int(bool(ref_includes_query))
        distances, indices = self.step.search(self.knn_func, query, k, reference, own)
        if own:
            rows = torch.arange(len(query), device=indices.device)
            distances, indices = drop_own_entry(distances, indices, rows)
        return distances, indices
