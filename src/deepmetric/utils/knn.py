"""Exact k-nearest-neighbour search in pure torch: the default kNN backend of deepmetric.

No faiss needed. The query set is processed in blocks of rows (and, when the reference set is
huge, the reference set in chunks of columns), so at most ``block_size x chunk`` scores exist at
any time instead of the full ``nq x nr`` matrix. Each block is reduced with ``torch.topk`` and the
per-chunk winners are merged, which gives exactly the k best references of the whole set.
"""

import operator
import os

import torch

from ..distances.base_distance import BaseDistance
from ..distances.cosine_similarity import CosineSimilarity
from ..distances.dot_product_similarity import DotProductSimilarity
from ..distances.lp_distance import LpDistance
from .errors import OutOfRangeError, ShapeError

# Bytes of scratch memory one search may use for scores; decides the block size when not given.
# Overridable per object (``memory_budget_bytes``) or globally with DEEPMETRIC_KNN_MEMORY_MB.
DEFAULT_CPU_BUDGET_BYTES = 128 * 2**20
DEFAULT_CUDA_BUDGET_BYTES = 1024 * 2**20
# Scratch bytes per score entry: the float32 key plus topk's workspace.
_BYTES_PER_ENTRY = 8
# Fewer query rows than this per block makes the matmul inefficient; chunk the reference instead.
_MIN_ROWS_PER_BLOCK = 64


def default_distance():
    """Squared Euclidean distance on raw embeddings: what faiss ``IndexFlatL2`` returns."""
    return LpDistance(normalize_embeddings=False, p=2, power=2)


class ExactKNN:
    """Exact k-nearest neighbours for any deepmetric distance, on CPU or GPU.

    ``knn(query, k, reference=None, ref_includes_query=False) -> (distances, indices)``, both
    ``(nq, k)`` on the query's device, row ``i`` sorted from closest to farthest: ascending values
    for distances, descending for similarities (``distance.is_inverted``). The values are those
    of ``distance(query, reference)``.

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
        * Ties: among equal values, the lower reference index comes first, and the k chosen
          are the lowest indices among tied candidates at the boundary. Results are therefore
          deterministic and independent of block size and device (up to the last-bit rounding
          of the matmul, which can differ between block shapes and devices).
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
            raise ValueError(
                f"embeddings have width {embeddings.shape[1]} but the index holds width "
                f"{self.index.shape[1]}"
            )
        self.index = torch.cat([self.index, embeddings.to(self.index.device, self.index.dtype)])

    def reset(self):
        self.index = None

    def save(self, filename):
        if self.index is None:
            raise ValueError("The index is empty: call train() before save()")
        torch.save({"index": self.index.cpu()}, filename)

    def load(self, filename):
        state = torch.load(filename, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "index" not in state:
            raise ValueError(f"{filename} is not an ExactKNN index file")
        self.index = state["index"]

    # ------------------------------------------------------------------ search
    def __call__(self, query, k, reference=None, ref_includes_query=False):
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
    distance = default_distance() if distance is None else distance
    query = _as_2d_tensor(query, "query")
    reference = query if reference is None else _as_2d_tensor(reference, "reference")
    if query.shape[1] != reference.shape[1]:
        raise ShapeError(
            "query and reference must have the same width: "
            f"query has {query.shape[1]} columns, reference has {reference.shape[1]}"
        )
    nq, nr = query.shape[0], reference.shape[0]
    own = 1 if ref_includes_query else 0
    k = _as_int(k, "k")
    if k < 1:
        raise OutOfRangeError(f"k must be at least 1, got {k}")
    if k > nr - own:
        extra = " excluding each query's own entry" if own else ""
        raise OutOfRangeError(f"k={k} exceeds the number of reference embeddings{extra} ({nr - own})")
    if own and nr < nq:
        raise ValueError(
            "ref_includes_query=True needs the query set to be the first rows of the reference "
            f"set, but the reference has {nr} rows and the query {nq}"
        )
    device = query.device
    compute_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    query = query.detach().to(compute_dtype)
    reference = reference.detach().to(device=device, dtype=compute_dtype)
    for name, x in (("query", query), ("reference", reference)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")

    scorer = _Scorer(distance, reference)
    largest = bool(distance.is_inverted)
    kk = k + own
    budget = _budget(memory_budget_bytes, device)
    chunk = nr
    if nr * _BYTES_PER_ENTRY * _MIN_ROWS_PER_BLOCK > budget:
        chunk = max(kk, budget // (_BYTES_PER_ENTRY * _MIN_ROWS_PER_BLOCK))
    if block_size is None:
        block_size = max(1, budget // (_BYTES_PER_ENTRY * (min(chunk, nr) + kk)))
    block_size = min(block_size, nq)

    # When most of each row is kept anyway, finalising every score before ranking costs little and
    # leaves no rounding ties to repair afterwards.
    finalize_first = scorer.mode == "l2" and 4 * kk >= min(chunk, nr)
    out_values = torch.empty(nq, k, dtype=compute_dtype, device=device)
    out_indices = torch.empty(nq, k, dtype=torch.long, device=device)
    for s in range(0, nq, block_size):
        e = min(s + block_size, nq)
        q_block = scorer.prepare_query(query[s:e])
        values, indices = None, None
        for c0 in range(0, nr, chunk):
            c1 = min(c0 + chunk, nr)
            keys = scorer.keys(q_block, c0, c1)
            if finalize_first:
                keys = scorer.finalize(q_block, keys)
            v, i = _ordered_topk(keys, min(kk, c1 - c0), largest)
            i += c0
            if values is None:
                values, indices = v, i
            else:
                values, indices = _merge(values, indices, v, i, kk, largest)
        if scorer.mode == "l2" and not finalize_first:
            # Clamping and rounding in finalize can create new ties: restore their index order
            # (rows are still sorted by value, so only adjacent equal values can be out of order).
            values = scorer.finalize(q_block, values)
            misordered = (values[:, 1:] == values[:, :-1]) & (indices[:, 1:] < indices[:, :-1])
            if misordered.any():
                rows = misordered.any(dim=1).nonzero().squeeze(1)
                values[rows], indices[rows] = _sort_ties_by_index(values[rows], indices[rows], largest)
        if own:
            values, indices = _drop_own_entry(values, indices, torch.arange(s, e, device=device))
        out_values[s:e] = values
        out_indices[s:e] = indices
    return out_values, out_indices


class _Scorer:
    """Ranking keys of a query block against a reference chunk, reference prepared once.

    Lp (p=2), dot-product and cosine distances use one fused matmul per block. For L2 the key is
    ``|r|^2 - 2 q.r``: the query's own ``|q|^2``, the clamp at 0 and the power are the same or
    monotone along a row, so they are applied to the k winners only (:meth:`finalize`). Any
    other distance object is called on the block and ranked by its own values.
    """

    def __init__(self, distance, reference):
        self.distance = distance
        self.mode = self.mode_of(distance)
        if self.mode == "generic":
            self.reference = reference
        else:
            self.reference = distance.maybe_normalize(reference)
        if self.mode == "l2":
            self.ref_sq_norms = (self.reference * self.reference).sum(dim=1)

    @staticmethod
    def mode_of(distance):
        kind = type(distance)
        if kind is LpDistance and distance.p == 2:
            return "l2"
        if kind in (DotProductSimilarity, CosineSimilarity):
            return "dot"
        return "generic"

    def prepare_query(self, q):
        if self.mode == "generic":
            return q
        return self.distance.maybe_normalize(q)

    def keys(self, q, c0, c1):
        if self.mode == "generic":
            mat = self.distance(q, self.reference[c0:c1]).to(q.dtype)
            worst = float("-inf") if self.distance.is_inverted else float("inf")
            return mat.nan_to_num_(nan=worst)
        r = self.reference[c0:c1]
        if self.mode == "dot":
            mat = q @ r.t()
            power = self.distance.power
            # A fractional power of a negative similarity is NaN: rank those last.
            return mat if power == 1 else mat.pow_(power).nan_to_num_(nan=float("-inf"))
        return torch.addmm(self.ref_sq_norms[c0:c1].unsqueeze(0), q, r.t(), alpha=-2)

    def finalize(self, q, values):
        if self.mode != "l2":
            return values
        # The expansion can go slightly negative by rounding; a distance cannot.
        values = values.add_((q * q).sum(dim=1, keepdim=True)).clamp_min_(0)
        power = self.distance.power
        return values if power == 2 else values.pow_(power / 2)


def _ordered_topk(scores, k, largest):
    """The k best entries of each row, lowest index first among ties, sorted best first."""
    n_cols = scores.shape[1]
    if 4 * k >= n_cols:
        # Most of the row is wanted (k=None in the accuracy calculator asks for all of it): one
        # stable sort is cheaper than topk plus the tie repairs, and a stable sort already keeps
        # equal values in ascending index order.
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


def _merge(values_a, indices_a, values_b, indices_b, k, largest):
    """Best k of two ordered candidate lists; every index in ``a`` is below every index in ``b``,
    so a stable sort of ``a`` followed by ``b`` keeps the lower-index-first rule."""
    values = torch.cat([values_a, values_b], dim=1)
    indices = torch.cat([indices_a, indices_b], dim=1)
    values, order = values.sort(dim=1, descending=largest, stable=True)
    return values[:, :k], indices.gather(1, order[:, :k])


def _drop_own_entry(values, indices, own_index):
    """Remove each row's own index (or its last entry if absent): k + 1 columns -> k."""
    is_own = indices == own_index.unsqueeze(1)
    # Keep only the first occurrence (there is at most one) and fall back to the last column.
    missing = ~is_own.any(dim=1)
    is_own[missing, -1] = True
    keep = ~is_own
    n, kk = indices.shape
    return values[keep].view(n, kk - 1), indices[keep].view(n, kk - 1)


def _as_int(value, name):
    """An int from an int-like value (Python, numpy or 0-d integer tensor); bools rejected."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.is_floating_point()):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None


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
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from exc
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_embeddings, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    return x
