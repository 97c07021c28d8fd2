"""The re-identification protocol: CMC, mAP and mINP with per-query gallery exclusion.

Each query ranks the whole reference (gallery) set, nearest first (equal values: lower reference
index first, the order of :class:`~deepmetric.evaluation.knn.ExactKNN`). References with the
query's label *and* the query's group (camera, sequence) are removed from its ranking, the
Market-1501 rule: a picture of the same person from the same camera is too easy a match. The
remaining references with the query's label are its positives; a query with none is not valid
and is left out. With ``r_1 < ... < r_R`` the 1-based ranks of a valid query's ``R`` positives
among the references it keeps:

* ``CMC@k``: the share of valid queries with ``r_1 <= k``;
* ``AP = (1 / R) sum_j j / r_j`` (precision at each positive, averaged), ``mAP`` its mean;
* ``INP = R / r_R`` (Zheng et al., "Deep Learning for Person Re-identification: A Survey and
  Outlook", 2021: how far down the hardest positive is), ``mINP`` its mean.

These are the definitions of torchreid's ``eval_market1501``. Scores come in blocks of query
rows (bounded memory: one block of ``B x M`` values and their order), never the N x M matrix.
"""

import torch

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError
from .verification import PairScores, memory_budget


def reid_metrics(
    query,
    query_labels,
    reference,
    reference_labels,
    query_groups=None,
    reference_groups=None,
    cmc_ranks=(1, 5, 10),
    query_categories=None,
    distance=None,
    memory_budget_bytes=None,
):
    """``{"cmc_at_<k>": ..., "mAP": ..., "mINP": ..., "valid_queries": int}`` of the protocol
    above, plus ``"per_category": {category: {...}}`` (the same figures over the queries of each
    category) when ``query_categories`` is given.

    Args:
        query, query_labels, reference, reference_labels: ``(N, D)``, ``(N,)``, ``(M, D)``,
            ``(M,)`` (identities).
        query_groups, reference_groups: ``(N,)`` and ``(M,)`` camera or sequence ids; both or
            neither (neither: nothing is excluded).
        cmc_ranks: the ``k`` of ``CMC@k``, positive ints.
        query_categories: ``(N,)`` a category per query for the breakdown.
        distance: a deepmetric distance (default squared Euclidean, as ExactKNN).
        memory_budget_bytes: scratch memory for one block of scores.
    """
    # a block here holds its values, their order and a few per-entry working tensors
    budget = max(1, memory_budget(memory_budget_bytes, torch.device("cpu")) // 3)
    source = PairScores(query, query_labels, reference, reference_labels, distance=distance,
                        memory_budget_bytes=budget)
    device = source.query.device
    if (query_groups is None) != (reference_groups is None):
        raise ArgumentError("query_groups and reference_groups must be given together (or neither)")
    if query_groups is not None:
        query_groups = _vector(query_groups, "query_groups", len(source.query), device)
        reference_groups = _vector(reference_groups, "reference_groups", len(source.reference), device)
    if query_categories is not None:
        query_categories = _vector(query_categories, "query_categories", len(source.query), device)
    ranks = _ranks(cmc_ranks)
    first, ap, inp = [], [], []
    for start, values in source.blocks():
        rows = torch.arange(start, start + len(values), device=device)
        same = source.query_labels[rows][:, None] == source.reference_labels[None, :]
        if same.dim() > 2:
            same = same.all(dim=-1)
        excluded = torch.zeros_like(same)
        if query_groups is not None:
            excluded = same & (query_groups[rows][:, None] == reference_groups[None, :])
        f, a, i = _query_figures(values * -source.sign, same & ~excluded, ~excluded)
        first.append(f)
        ap.append(a)
        inp.append(i)
    first, ap, inp = torch.cat(first), torch.cat(ap), torch.cat(inp)
    out = _summary(first, ap, inp, ranks)
    if query_categories is not None:
        out["per_category"] = {}
        for category in torch.unique(query_categories):
            mask = query_categories == category
            key = category.item()
            out["per_category"][key] = _summary(first[mask], ap[mask], inp[mask], ranks)
    return out


def _query_figures(keys, positive, kept):
    """Per query: rank of the first positive, AP and INP (NaN rank / values for a query without
    positives). ``keys``: smaller is nearer."""
    order = torch.sort(keys, dim=1, stable=True).indices
    positive = torch.gather(positive, 1, order)
    kept_rank = torch.cumsum(torch.gather(kept, 1, order).long(), dim=1).double()
    hits = torch.cumsum(positive.long(), dim=1).double()
    count = hits[:, -1]
    pos_ranks = torch.where(positive, kept_rank, torch.full_like(kept_rank, torch.inf))
    first = pos_ranks.min(dim=1).values
    last = torch.where(positive, kept_rank, torch.zeros_like(kept_rank)).max(dim=1).values
    ap = torch.where(positive, hits / kept_rank, torch.zeros_like(kept_rank)).sum(dim=1) / count
    inp = count / last
    valid = count > 0
    nan = torch.full_like(first, torch.nan)
    return torch.where(valid, first, nan), torch.where(valid, ap, nan), torch.where(valid, inp, nan)


def _summary(first, ap, inp, ranks):
    valid = ~torch.isnan(first)
    n = int(valid.sum())
    if n == 0:
        c_f.LOGGER.warning("no query has a positive reference left after the exclusion: the figures are NaN")
    out = {}
    for k in ranks:
        out[f"cmc_at_{k}"] = float((first[valid] <= k).double().mean()) if n else float("nan")
    out["mAP"] = float(ap[valid].mean()) if n else float("nan")
    out["mINP"] = float(inp[valid].mean()) if n else float("nan")
    out["valid_queries"] = n
    return out


def _ranks(cmc_ranks):
    if isinstance(cmc_ranks, int) or not isinstance(cmc_ranks, (tuple, list)) or not all(
        isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in cmc_ranks
    ):
        raise ArgumentError(f"cmc_ranks must be a tuple or list of positive ints, got {cmc_ranks!r}")
    return sorted(set(cmc_ranks))


def _vector(x, name, length, device):
    x = torch.as_tensor(c_f.numpy_to_torch(x)).to(device)
    if x.dim() != 1 or len(x) != length:
        raise ArgumentError(
            f"{name} must have one entry per embedding: expected {length}, got shape {tuple(x.shape)}"
        )
    return x
