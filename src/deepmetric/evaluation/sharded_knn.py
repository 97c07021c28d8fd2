"""Exact k-nearest neighbours when every process holds only a shard of the data.

Under ``torch.distributed`` each rank passes its own rows of the query set and of the reference
set. The global sets are the rank-ordered concatenations of the shards, and the answer is the
same as :func:`deepmetric.evaluation.knn.exact_knn` on the global sets: for each local query, the k
closest references among all ranks, as global reference indices, with ties broken towards the
lower global index.

How: the ranks take turns. The rank whose turn it is broadcasts its query shard; every rank finds
those queries' best candidates in its own reference shard and sends them back; the owner merges
them. So a rank holds its own shards, one other query shard and ``world_size x k`` candidates per
query of that shard, never the whole reference set.
"""

import torch
import torch.distributed as dist

from ..ops.gather import is_distributed
from ..utils.errors import SearchInputError
from .knn import default_distance, drop_own_entry, exact_knn, merge_candidates, search_exact


def sharded_knn(query, k, reference, ref_includes_query=False, distance=None, group=None, query_indices=None):
    """``(values, global_indices)`` of the k nearest global references of the local ``query`` rows.

    ``ref_includes_query=True`` means the global query set is the start of the global reference set
    (as in single-process evaluation): each query's own global entry is left out. Its global index
    is its position in the rank-ordered concatenation of the query shards, unless
    ``query_indices`` gives it (when ``query`` is a selection of this rank's rows). Without an
    initialised process group this is :func:`exact_knn` on the arguments.
    """
    distance = default_distance() if distance is None else distance
    if not is_distributed():
        return exact_knn(query, k, reference, ref_includes_query=ref_includes_query, distance=distance)
    if query.ndim != 2 or reference.ndim != 2:
        raise SearchInputError(
            "query and reference shards must be 2-D, got shapes "
            f"{tuple(query.shape)} and {tuple(reference.shape)}"
        )
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    sizes = _all_sizes(query, reference, group)
    query_sizes, ref_sizes = sizes[:, 0].tolist(), sizes[:, 1].tolist()
    width = sizes[:, 2].unique()
    if len(width) != 1:
        raise SearchInputError(
            f"every rank's shards must have the same width, got widths {sizes[:, 2].tolist()}"
        )
    own = 1 if ref_includes_query else 0
    total_refs = sum(ref_sizes)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SearchInputError(f"k must be a positive int, got {k!r}")
    if k > total_refs - own:
        raise SearchInputError(
            f"k={k} exceeds the number of reference embeddings over all ranks ({total_refs - own})"
        )
    kk = k + own
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    largest = bool(distance.is_inverted)
    ref_offset = sum(ref_sizes[:rank])
    result = None
    for owner in range(world):
        if query_sizes[owner] == 0:  # every rank knows the sizes, so all skip this turn together
            if owner == rank:
                empty = torch.empty(0, kk, dtype=torch.float64, device=query.device)
                result = (empty, torch.empty(0, kk, dtype=torch.long, device=query.device))
            continue
        shard = (
            query.detach().to(dtype)
            if owner == rank
            else query.new_empty(query_sizes[owner], int(width), dtype=dtype)
        )
        dist.broadcast(shard, src=_global_rank(owner, group), group=group)
        values, indices = _local_candidates(shard, reference, kk, distance, largest)
        indices = torch.where(indices >= 0, indices + ref_offset, indices)
        gathered = _gather_to(owner, rank, world, (values, indices), group)
        if owner == rank:
            result = _merge_in_rank_order(gathered, kk, largest)
    values, indices = result
    if own:
        if query_indices is None:
            query_offset = sum(query_sizes[:rank])
            query_indices = torch.arange(query_offset, query_offset + len(values))
        values, indices = drop_own_entry(values, indices, torch.as_tensor(query_indices).to(values.device))
    return values.to(dtype), indices


def _all_sizes(query, reference, group):
    mine = torch.tensor([[query.shape[0], reference.shape[0], query.shape[1]]], device=query.device)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(everyone, mine, group=group)
    return torch.cat(everyone)


def _local_candidates(queries, reference, kk, distance, largest):
    """This rank's best ``kk`` references of each query, padded with "worst" entries (index -1)
    when the local shard has fewer rows. Values are float64 (exact where the search refines
    them), so that merging the ranks' candidates keeps the exact order."""
    worst = float("-inf") if largest else float("inf")
    values = torch.full((len(queries), kk), worst, dtype=torch.float64, device=queries.device)
    indices = torch.full((len(queries), kk), -1, dtype=torch.long, device=queries.device)
    available = min(kk, reference.shape[0])
    if len(queries) and available:
        reference = reference.detach().to(queries.device)
        v, i, _ = search_exact(queries, available, reference, distance=distance, exact_values=True)
        values[:, :available], indices[:, :available] = v.double(), i
    return values, indices


def _gather_to(owner, rank, world, tensors, group):
    """Every rank's candidate tensors, at ``owner`` (in rank order); None elsewhere."""
    out = []
    for tensor in tensors:
        buckets = [torch.empty_like(tensor) for _ in range(world)] if rank == owner else None
        dist.gather(tensor.contiguous(), buckets, dst=_global_rank(owner, group), group=group)
        out.append(buckets)
    return out if rank == owner else None


def _merge_in_rank_order(gathered, kk, largest):
    # Rank r's global indices all lie below rank r+1's, so merging in rank order with a stable
    # sort keeps the single-process rule: equal values in ascending global index.
    values_list, indices_list = gathered
    values, indices = values_list[0], indices_list[0]
    for v, i in zip(values_list[1:], indices_list[1:]):
        values, indices = merge_candidates(values, indices, v, i, kk, largest)
    return values, indices


def _global_rank(rank_in_group, group):
    return rank_in_group if group is None else dist.get_global_rank(group, rank_in_group)
