"""Exact k-nearest-neighbour search in pure torch: the default kNN backend of deepmetric.

No faiss needed. The query set is processed in blocks of rows (and, when the reference set is
huge, the reference set in chunks of columns), so at most ``block_size x chunk`` scores exist at
any time instead of the full ``nq x nr`` matrix.

For squared L2, dot products and cosine, one matmul per block gives fast keys; ``torch.topk``
keeps the ``k + 8`` best of each row, and these candidates are then put in their exact order:
entries whose fast values lie within the matmul's rounding error of one another get their exact
float64 values (see :mod:`._knn_scores`), so near ties come out as the exact distances order
them, which float32 matmuls (and faiss' flat index) can get wrong. A row where an entry outside
the candidates could still beat the k-th is searched again with more candidates. Other distances
are ranked by their own values.
"""

import operator
import os

import torch

from ..distances.base_distance import BaseDistance
from ..distances.lp_distance import LpDistance
from ..utils import common_functions as c_f
from ..utils.errors import SearchInputError
from ._index_files import load_index_file, save_exact_index
from ._knn_scores import Scorer
from .positive_ranks import positive_ranks, supports_distance

# Bytes of scratch memory one search may use for scores; decides the block size when not given.
# Overridable per object (``memory_budget_bytes``) or globally with DEEPMETRIC_KNN_MEMORY_MB.
DEFAULT_CPU_BUDGET_BYTES = 128 * 2**20
DEFAULT_CUDA_BUDGET_BYTES = 1024 * 2**20
# Scratch bytes per score entry: the float32 key plus topk's workspace (twice that for float64).
_BYTES_PER_ENTRY = 8
# Fewer query rows than this per block makes the matmul inefficient; chunk the reference instead.
_MIN_ROWS_PER_BLOCK = 64
# Candidates kept beyond k by the fast stage, so that a near tie at the k-th rarely needs a
# second pass.
_MARGIN = 8


def default_distance():
    """Squared Euclidean distance on raw embeddings: what faiss ``IndexFlatL2`` returns."""
    return LpDistance(normalize_embeddings=False, p=2, power=2)


class ExactKNN:
    """Exact k-nearest neighbours for any deepmetric distance, on CPU or GPU.

    ``knn(query, k, reference=None, ref_includes_query=False) -> (distances, indices)``, both
    ``(nq, k)`` on the query's device, row ``i`` sorted from closest to farthest: ascending values
    for distances, descending for similarities (``distance.is_inverted``). Each call logs the
    reference's two INFO lines (``running k-nn with k=...``); :meth:`search` is the same search
    without them.

    Args:
        distance: a deepmetric distance object. Default: squared Euclidean distance on
            un-normalised embeddings (``LpDistance(normalize_embeddings=False, p=2, power=2)``),
            i.e. the same neighbours and the same values as the reference's default ``FaissKNN``
            (faiss ``IndexFlatL2``).
        block_size: query rows processed at once. ``None`` picks it from ``memory_budget_bytes``.
        memory_budget_bytes: scratch memory for one block of scores. ``None``: 128 MiB on CPU,
            1 GiB on CUDA (or ``DEEPMETRIC_KNN_MEMORY_MB``).

    Semantics:
        * ``reference=None``: search the stored index when one was built with :meth:`train` /
          :meth:`add` (as ``InferenceModel`` does), otherwise the query set itself.
        * ``ref_includes_query=True``: query ``i`` is reference ``i``. The ``k + 1`` best are
          found and query ``i``'s own entry (index ``i``) removed; a row whose own index is not
          among them (many exact duplicates) drops its last entry instead. This is the reference
          library's rule; it equals "the k best references other than itself".
        * Order: for squared L2 (any power of the L2 distance), dot products and cosine, the
          order of the exact values (float64 direct differences / products of the prepared
          embeddings), whatever the rounding of the matmul; returned values are within float
          rounding of the distance's. Other distances are ranked by their own values.
        * Ties (equal values): the lower reference index comes first, and the k chosen are the
          lowest indices among tied candidates at the boundary, as faiss does. Results do not
          depend on the block size, the chunking or the device.
        * NaN scores (possible only with custom distances) rank last.
        * float16/bfloat16 inputs are computed in float32; float64 stays float64.
    """

    def __init__(self, distance=None, block_size=None, memory_budget_bytes=None):
        if distance is None:
            distance = default_distance()
        if not isinstance(distance, BaseDistance) and not hasattr(distance, "is_inverted"):
            raise TypeError(
                "distance must be a deepmetric distance object (with is_inverted), "
                f"got {type(distance).__name__}"
            )
        if block_size is not None and (
            isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
        ):
            raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
        if memory_budget_bytes is not None and (
            isinstance(memory_budget_bytes, bool)
            or not isinstance(memory_budget_bytes, int)
            or memory_budget_bytes < 1
        ):
            raise ValueError(
                f"memory_budget_bytes must be a positive int or None, got {memory_budget_bytes!r}"
            )
        self.distance = distance
        self.block_size = block_size
        self.memory_budget_bytes = memory_budget_bytes
        self.index = None

    # ------------------------------------------------------------------ stored index
    def train(self, embeddings):
        """Replace the stored index with ``embeddings`` (the search space)."""
        self.index = None
        self.add(embeddings)

    def add(self, embeddings):
        """Append ``embeddings`` to the stored index."""
        embeddings = _as_2d_tensor(embeddings, "embeddings").detach()
        if self.index is None:
            self.index = embeddings.clone()
            return
        if embeddings.shape[1] != self.index.shape[1]:
            raise SearchInputError(
                f"embeddings have width {embeddings.shape[1]} but the index holds width "
                f"{self.index.shape[1]}"
            )
        self.index = torch.cat([self.index, embeddings.to(self.index.device, self.index.dtype)])

    def reset(self):
        self.index = None

    def save(self, filename):
        """Write the stored embeddings to ``filename``: as a faiss flat index file (what the
        reference's ``FaissKNN.save`` writes, readable by ``faiss.read_index``) when the distance
        is squared L2 or the dot product of raw float32 embeddings, otherwise as a torch file."""
        if self.index is None:
            raise ValueError("The index is empty: call train() or add() before save()")
        save_exact_index(filename, self.index, self.distance)

    def load(self, filename):
        """Read the stored embeddings from ``filename``: a file written by :meth:`save`, or a
        faiss flat index (``IndexFlatL2`` / ``IndexFlatIP``) written by ``faiss.write_index``;
        the distance becomes the index's (squared L2 / raw dot product). Anything else raises
        :class:`~deepmetric.utils.errors.IndexFileError` naming the file."""
        self.index, distance = load_index_file(filename, "ExactKNN.load")
        if distance is not None:
            self.distance = distance

    # ------------------------------------------------------------------ search
    def __call__(self, query, k, reference=None, ref_includes_query=False):
        self.log_search(_as_int(k, "k") + int(bool(ref_includes_query)), query)
        return self.search(query, k, reference, ref_includes_query)

    def log_search(self, k, query):
        """The reference's two INFO lines of a search for ``k`` neighbours of ``query``."""
        c_f.LOGGER.info("running k-nn with k=%d", k)
        if hasattr(query, "shape") and len(query.shape) == 2:
            c_f.LOGGER.info("embedding dimensionality is %d", query.shape[1])

    def search(self, query, k, reference=None, ref_includes_query=False):
        """The search of :meth:`__call__`, without logging."""
        if reference is None:
            reference = self.index if self.index is not None else query
        return exact_knn(
            query,
            k,
            reference,
            ref_includes_query=ref_includes_query,
            distance=self.distance,
            block_size=self.block_size,
            memory_budget_bytes=self.memory_budget_bytes,
        )

    def positive_ranks(self, query, reference, query_ids, reference_ids, own_columns, block_rows):
        """The ranks of each query's positives in the order :meth:`search` ranks the reference,
        without sorting rows: an iterator of blocks ``(rows, ranks, unresolved)`` (see
        :func:`deepmetric.evaluation.positive_ranks.positive_ranks` for the arguments), or None
        when this object's distance is not one whose order they reproduce."""
        if not supports_distance(self.distance):
            return None
        ids = (query_ids, reference_ids)
        return positive_ranks(query, reference, *ids, own_columns, self.distance, block_rows)

    def __repr__(self):
        return (
            f"ExactKNN(distance={type(self.distance).__name__}, block_size={self.block_size}, "
            f"memory_budget_bytes={self.memory_budget_bytes})"
        )


def exact_knn(
    query,
    k,
    reference=None,
    ref_includes_query=False,
    distance=None,
    block_size=None,
    memory_budget_bytes=None,
):
    """Function form of :class:`ExactKNN` (same arguments and results); ``reference=None``
    searches the query set itself."""
    values, indices, dtype = search_exact(
        query, k, reference, ref_includes_query, distance, block_size, memory_budget_bytes
    )
    return values.to(dtype), indices


def search_exact(
    query,
    k,
    reference=None,
    ref_includes_query=False,
    distance=None,
    block_size=None,
    memory_budget_bytes=None,
    exact_values=False,
):
    """:func:`exact_knn` returning ``(values, indices, dtype)``, ``dtype`` being the one
    :func:`exact_knn` returns the values in. For squared L2 and dot products ``values`` are
    float64; with ``exact_values=True`` every one of them is the exact value (not only those
    near another), unless most of each row was asked for (then the keys are float64 matmuls), so
    the results of several searches (shards) can be merged in the exact order."""
    distance = default_distance() if distance is None else distance
    query = _as_2d_tensor(query, "query")
    reference = query if reference is None else _as_2d_tensor(reference, "reference")
    if query.shape[1] != reference.shape[1]:
        raise SearchInputError(
            "query and reference must have the same width: "
            f"query has {query.shape[1]} columns, reference has {reference.shape[1]}"
        )
    nq, nr = query.shape[0], reference.shape[0]
    own = 1 if ref_includes_query else 0
    k = _as_int(k, "k")
    if k < 1:
        raise SearchInputError(f"k must be at least 1, got {k}")
    if k > nr - own:
        extra = " excluding each query's own entry" if own else ""
        raise SearchInputError(f"k={k} exceeds the number of reference embeddings{extra} ({nr - own})")
    if own and nr < nq:
        raise SearchInputError(
            "ref_includes_query=True needs the query set to be the first rows of the reference "
            f"set, but the reference has {nr} rows and the query {nq}"
        )
    device = query.device
    compute_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    query = query.detach().to(compute_dtype)
    reference = reference.detach().to(device=device, dtype=compute_dtype)
    for name, x in (("query", query), ("reference", reference)):
        if not torch.isfinite(x).all():
            raise SearchInputError(f"{name} contains NaN or Inf values")

    scorer = Scorer(distance, reference)
    kk = k + own
    budget = _budget(memory_budget_bytes, device)
    if scorer.refines:
        search = _RefinedSearch(scorer, kk, budget, exact_values)
    else:
        search = _PlainSearch(scorer, kk, budget)
    rows = min(block_size or search.block_rows, nq)
    out_values = torch.empty(nq, k, dtype=search.value_dtype, device=device)
    out_indices = torch.empty(nq, k, dtype=torch.long, device=device)
    for s in range(0, nq, rows):
        e = min(s + rows, nq)
        values, indices = search(scorer.prepare_query(query[s:e]))
        if own:
            values, indices = drop_own_entry(values, indices, torch.arange(s, e, device=device))
        out_values[s:e] = values
        out_indices[s:e] = indices
    return out_values, out_indices, compute_dtype


def _chunk_and_rows(n_ref, width, budget, bytes_per_entry):
    """Reference columns per chunk and query rows per block for ``width`` kept entries."""
    chunk = n_ref
    if n_ref * bytes_per_entry * _MIN_ROWS_PER_BLOCK > budget:
        chunk = max(width, budget // (bytes_per_entry * _MIN_ROWS_PER_BLOCK))
    rows = max(1, budget // (bytes_per_entry * (min(chunk, n_ref) + width)))
    return chunk, rows


class _RefinedSearch:
    """Squared L2 / dot-product search: fast candidates, then the exact order (module docstring).

    When most of each row is wanted anyway (``4 (k + 8) >= n``) the keys are computed in float64
    from the start, so that hardly any entry needs its exact value.
    """

    value_dtype = torch.float64

    def __init__(self, scorer, kk, budget, exact_values=False):
        self.scorer, self.kk, self.budget = scorer, kk, budget
        self.exact_values = exact_values
        self.kc = min(scorer.n, kk + _MARGIN)
        self.precise = 4 * self.kc >= scorer.n or scorer.reference.dtype == torch.float64
        bytes_per_entry = 2 * _BYTES_PER_ENTRY if self.precise else _BYTES_PER_ENTRY
        self.chunk, self.block_rows = _chunk_and_rows(scorer.n, self.kc, budget, bytes_per_entry)

    def __call__(self, q):
        values, indices = self._ordered(q, self.kc, self.precise)
        return self.scorer.output_values(values), indices

    def _ordered(self, q, kc, precise):
        """The ``kk`` best of each row of ``q`` in exact order, from ``kc`` fast candidates."""
        scorer, kk = self.scorer, self.kk
        keys, indices, following = self._candidates(q, kc, precise)
        approx = scorer.approx_values(q, keys)
        bound = scorer.bound(q, precise)
        # Anything outside the candidates is worse than the kk-th by more than the error bound,
        # unless the first excluded key comes too close: search those rows with more candidates.
        limit = approx[:, kk - 1] + 2 * bound
        excluded = scorer.approx_values(q, following.unsqueeze(1))[:, 0]
        wide = ~(excluded > limit) & (kc < scorer.n)
        every = self.exact_values and not precise
        if not wide.any():
            return _exact_order(scorer, q, approx, indices, bound, kk, every)
        values = torch.empty(q.shape[0], kk, dtype=torch.float64, device=q.device)
        out_indices = torch.empty(q.shape[0], kk, dtype=torch.long, device=q.device)
        narrow = (~wide).nonzero().reshape(-1)
        if len(narrow):
            values[narrow], out_indices[narrow] = _exact_order(
                scorer, q[narrow], approx[narrow], indices[narrow], bound[narrow], kk, every
            )
        rows = wide.nonzero().reshape(-1)
        # float64 keys take twice the bytes: half as many rows at a time keeps the budget.
        step = len(rows) if self.precise else max(1, self.block_rows // 2)
        for s in range(0, len(rows), step):
            part = rows[s : s + step]
            needed = self._count_at_most(q[part], limit[part])
            wider = min(scorer.n, max(int(needed.max()), 2 * kc))
            values[part], out_indices[part] = self._ordered(q[part], wider, True)
        return values, out_indices

    def _candidates(self, q, kc, precise):
        """``(keys, indices, following)``: the ``kc`` smallest ascending keys of each row in
        order, and the smallest key left out (``inf`` if none)."""
        n, chunk = self.scorer.n, self.chunk
        keys = indices = None
        dtype = torch.float64 if precise else q.dtype
        following = torch.full((q.shape[0],), float("inf"), dtype=dtype, device=q.device)
        for c0 in range(0, n, chunk):
            c1 = min(c0 + chunk, n)
            v, i = _smallest(self.scorer.ascending_keys(q, c0, c1, precise), kc + 1)
            i += c0
            if keys is not None:
                v, i = torch.cat([keys, v], dim=1), torch.cat([indices, i], dim=1)
                v, order = _smallest(v, kc + 1)
                i = i.gather(1, order)
            if v.shape[1] > kc:
                following = torch.minimum(following, v[:, kc])
                v, i = v[:, :kc], i[:, :kc]
            keys, indices = v, i
        return keys, indices, following

    def _count_at_most(self, q, limit):
        """How many entries of each row have an approximate value at most ``limit``."""
        count = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        for c0 in range(0, self.scorer.n, self.chunk):
            c1 = min(c0 + self.chunk, self.scorer.n)
            approx = self.scorer.approx_values(q, self.scorer.ascending_keys(q, c0, c1, True))
            count += (approx <= limit.unsqueeze(1)).sum(dim=1)
        return count


def _smallest(keys, k):
    """The ``k`` smallest entries of each row, ascending (order among equal keys unspecified)."""
    k = min(k, keys.shape[1])
    if 4 * k >= keys.shape[1]:
        values, order = torch.sort(keys, dim=1)
        return values[:, :k], order[:, :k]
    return torch.topk(keys, k, dim=1, largest=False, sorted=True)


def _exact_order(scorer, q, approx, indices, bound, kk, every=False):
    """The first ``kk`` of candidates sorted by exact value, then by reference index.

    ``approx`` (ascending along rows) is within ``bound`` of the exact values, so two entries
    whose approximations differ by more than ``2 bound`` are already in their exact order: only
    entries with a neighbour closer than that get their exact value (the others keep their
    approximation, which orders them the same way), or all of them with ``every``.
    """
    close = ~(approx[:, 1:] - approx[:, :-1] > 2 * bound.unsqueeze(1))  # NaN counts as close
    needs_exact = torch.zeros_like(approx, dtype=torch.bool)
    needs_exact[:, 1:] |= close
    needs_exact[:, :-1] |= close
    if every:
        needs_exact.fill_(True)
    values = approx.clone()
    if needs_exact.any():
        rows, cols = needs_exact.nonzero(as_tuple=True)
        values[rows, cols] = scorer.exact_values(q, rows, indices[rows, cols])
    values, indices = _sort_ties_by_index(values, indices, largest=False)
    return values[:, :kk], indices[:, :kk]


class _PlainSearch:
    """Any other distance: its own values, ``torch.topk`` per chunk, ties by lower index."""

    def __init__(self, scorer, kk, budget):
        self.scorer, self.kk = scorer, kk
        self.largest = bool(scorer.distance.is_inverted)
        self.value_dtype = scorer.reference.dtype
        self.chunk, self.block_rows = _chunk_and_rows(scorer.n, kk, budget, _BYTES_PER_ENTRY)

    def __call__(self, q):
        n, kk = self.scorer.n, self.kk
        values = indices = None
        for c0 in range(0, n, self.chunk):
            c1 = min(c0 + self.chunk, n)
            v, i = _ordered_topk(self.scorer.keys(q, c0, c1), min(kk, c1 - c0), self.largest)
            i += c0
            if values is None:
                values, indices = v, i
            else:
                values, indices = merge_candidates(values, indices, v, i, kk, self.largest)
        return self.scorer.finalize(q, values), indices


def _ordered_topk(scores, k, largest):
    """The k best entries of each row, lowest index first among ties, sorted best first."""
    n_cols = scores.shape[1]
    if 4 * k >= n_cols:
        # Most of the row is wanted: one stable sort is cheaper than topk plus the tie repairs,
        # and a stable sort already keeps equal values in ascending index order.
        values, indices = torch.sort(scores, dim=1, descending=largest, stable=True)
        return values[:, :k], indices[:, :k]
    values, indices = torch.topk(scores, min(k + 1, n_cols), dim=1, largest=largest, sorted=True)
    if n_cols > k:
        # topk's choice among entries equal to the k-th value is unspecified; the (k+1)-th
        # equalling the k-th is exactly the case where it had a choice: redo those rows.
        ambiguous = values[:, k] == values[:, k - 1]
        values, indices = values[:, :k], indices[:, :k]
        if ambiguous.any():
            rows = ambiguous.nonzero().squeeze(1)
            sub, t = scores[rows], values[rows, k - 1 :]
            better = sub > t if largest else sub < t
            equal = sub == t
            room = k - better.sum(dim=1, keepdim=True)
            take = better | (equal & (equal.cumsum(dim=1) <= room))
            chosen = take.nonzero()[:, 1].view(len(rows), k)  # exactly k per row, ascending
            indices[rows] = chosen
            values[rows] = sub.gather(1, chosen)
    return _sort_ties_by_index(values, indices, largest)


def _sort_ties_by_index(values, indices, largest):
    """Sort rows best first; equal values in ascending index order (index sort, then a stable
    value sort)."""
    indices, order = indices.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=largest, stable=True)
    return values, indices.gather(1, order)


def merge_candidates(values_a, indices_a, values_b, indices_b, k, largest):
    """Best k of two ordered candidate lists; every index in ``a`` is below every index in ``b``,
    so a stable sort of ``a`` followed by ``b`` keeps the lower-index-first rule."""
    values = torch.cat([values_a, values_b], dim=1)
    indices = torch.cat([indices_a, indices_b], dim=1)
    values, order = values.sort(dim=1, descending=largest, stable=True)
    return values[:, :k], indices.gather(1, order[:, :k])


def drop_own_entry(values, indices, own_index):
    """Remove from row ``i`` its entry ``own_index[i]`` (the query itself), or its last entry
    when that index is absent: ``(n, k + 1) -> (n, k)``. This is the reference's rule for
    ``ref_includes_query``; with many exact duplicates a query can be missing from its own
    neighbours."""
    is_own = indices == own_index.unsqueeze(1)
    # One removal per row: the first occurrence, or the last column when there is none.
    is_own &= is_own.cumsum(dim=1) == 1
    missing = ~is_own.any(dim=1)
    is_own[missing, -1] = True
    keep = ~is_own
    n, kk = indices.shape
    return values[keep.to(values.device)].view(n, kk - 1), indices[keep].view(n, kk - 1)


def _as_int(value, name):
    """An int from an int-like value (Python, numpy or 0-d integer tensor); bools rejected."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.is_floating_point()):
        raise SearchInputError(f"{name} must be a positive int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise SearchInputError(f"{name} must be a positive int, got {value!r}") from None


def _budget(memory_budget_bytes, device):
    if memory_budget_bytes is not None:
        return memory_budget_bytes
    env = os.environ.get("DEEPMETRIC_KNN_MEMORY_MB")
    if env:
        return int(float(env) * 2**20)
    return DEFAULT_CUDA_BUDGET_BYTES if device.type == "cuda" else DEFAULT_CPU_BUDGET_BYTES


def _as_2d_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(c_f.numpy_to_torch(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SearchInputError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc
    if x.ndim != 2:
        raise SearchInputError(f"{name} must be 2-D (num_embeddings, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise SearchInputError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise SearchInputError(f"{name} must hold numbers, got dtype {x.dtype}")
    return x
