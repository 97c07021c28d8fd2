"""Ranks of each query's positives in its full ranking of the reference set, without sorting rows.

Retrieval metrics over the whole ranking (``AccuracyCalculator(k=None)``) only need where the
positives land. With a query's positives in ranking order (keys ascending, smaller is better,
equal keys by reference index), the j-th positive has rank ``j + #{negatives ranked before it}``.
A negative ranked after the worst positive changes nothing, so only the negatives whose key is at
most the worst positive's are looked at (one comparison pass over the row, then a compaction);
each is placed among the row's sorted positives by ``searchsorted``, equal keys by reference
index. For embeddings where classes are at all separated these candidates are a small fraction
of the row, so the cost is the key matrix plus two passes over it instead of a sort of every row.
"""

import torch

from ..distances.lp_distance import LpDistance
from ..distances.snr_distance import SNRDistance
from .knn import _Scorer

# Above this fraction of candidate entries, count by bins (a few dense passes) instead of placing
# every candidate by searchsorted.
_DENSE_FRACTION = 0.15
# Bins per positive when counting by bins: more bins leave fewer entries to place one by one but
# make the per-row histograms longer.
_BINS_PER_POSITIVE = 32
_MIN_BINS = 1024
# Ties between a negative and positives are walked one equal positive at a time, up to this many;
# rows with longer runs or with more tied negatives than this (or n / 16) are left to the search.
_MAX_TIE_RUN = 16
_MAX_TIES_PER_ROW = 256


def supports_distance(distance):
    """Whether :func:`positive_ranks` ranks by exactly the keys ``ExactKNN`` would use: distances
    whose matrix entry depends on its own query and reference rows only (the built-ins)."""
    return _Scorer.mode_of(distance) != "generic" or type(distance) in (LpDistance, SNRDistance)


def positive_ranks(query, reference, query_ids, reference_ids, own_columns, distance, block_rows):
    """Yield ``(rows, ranks, unresolved)`` for blocks of queries.

    Args:
        query: ``(nq, D)`` float tensor. reference: ``(nr, D)`` on the same device and dtype.
        query_ids / reference_ids: int64 class ids; query ``i``'s positives are the references
            with ``reference_ids == query_ids[i]`` (minus its own entry).
        own_columns: ``None``, or per query the reference index that is the query itself; it
            is neither a positive nor a negative (removed by position, as ``ExactKNN`` does with
            ``ref_includes_query``). It must carry the query's own class id.
        distance: the ``ExactKNN`` distance; keys are those ``ExactKNN`` ranks by.
        block_rows: queries per block (bounds the ``block_rows x nr`` key matrix).

    Yields:
        ``rows`` (b,) query indices, ``ranks`` (b, Rmax) float64: 1-based rank of the j-th best
        positive among all references other than the query itself (``inf`` beyond the row's
        positive count), ``unresolved`` (b,) bool: rows with NaN keys or whose own entry is not
        among its positives; their ``ranks`` are meaningless.
    """
    device = query.device
    nr = reference.shape[0]
    ref_order = torch.argsort(reference_ids, stable=True)
    sorted_ids = reference_ids[ref_order]
    column_of = torch.empty_like(ref_order)
    column_of[ref_order] = torch.arange(nr, device=device)
    # Query i's positives are the columns [start, end) of the class-sorted reference, in
    # ascending reference index (the sort is stable): the order ties are broken in.
    starts = torch.searchsorted(sorted_ids, query_ids, side="left")
    ends = torch.searchsorted(sorted_ids, query_ids, side="right")
    scorer = _Scorer(distance, reference[ref_order])
    negate = bool(distance.is_inverted)
    # Squared L2: the finalising step (add |q|^2, clamp at 0) is applied lazily, to the entries
    # that can matter only (see _block_ranks); other powers finalise whole rows, like ExactKNN.
    lazy = scorer.mode == "l2" and distance.power == 2
    # Queries of one class share their positive columns: process them together.
    query_order = torch.argsort(query_ids, stable=True)
    for s in range(0, len(query_order), block_rows):
        rows = query_order[s : s + block_rows]
        q = scorer.prepare_query(query[rows])
        keys = scorer.keys(q, 0, nr)
        if lazy:
            shift = (q * q).sum(dim=1, keepdim=True)  # what finalize adds
        else:
            # Finalised keys (clamp, power) are what ExactKNN sorts when most of a row is wanted.
            keys, shift = scorer.finalize(q, keys), None
        if negate:
            keys = keys.neg_()
        own = None if own_columns is None else column_of[own_columns[rows]]
        ranks, unresolved = _block_ranks(keys, starts[rows], ends[rows], own, ref_order, shift)
        yield rows, ranks, unresolved


def _settle(values, shift):
    """Squared L2 finalisation, exactly as ``_Scorer.finalize`` does it (in place)."""
    return values.add_(shift).clamp_min_(0)


def _block_ranks(keys, start, end, own, ref_order, shift=None):
    """``(ranks, unresolved)`` of one block of rows (see :func:`positive_ranks`); ``keys`` is
    overwritten. With ``shift`` (b, 1), ``keys`` are squared L2 keys before finalisation: only
    the positives and the candidates are finalised (``_settle``)."""
    b, n = keys.shape
    device = keys.device
    inf = float("inf")
    if shift is None:
        unresolved = torch.isnan(keys.sum(dim=1))
    else:
        # An ascending sort puts NaN last, after every positive: only NaN positives matter.
        unresolved = torch.zeros(b, dtype=torch.bool, device=device)
    count = end - start
    if own is not None:
        # Removed by position: the positive columns skip it.
        unresolved |= (own < start) | (own >= end)
        count = count - 1
    rmax = max(1, int(count.max()))
    offsets = torch.arange(rmax, device=device)
    columns = start[:, None] + offsets
    if own is not None:
        columns += columns >= own[:, None]
    real = offsets < count[:, None]
    columns = torch.where(real, columns, start[:, None])
    positives = keys.gather(1, columns)
    if shift is not None:
        raw_worst = positives.masked_fill(~real, -inf).max(dim=1, keepdim=True).values
        positives = _settle(positives, shift)
        unresolved |= torch.isnan(positives).any(dim=1)
    positives, order = torch.sort(positives.masked_fill_(~real, inf), dim=1, stable=True)
    columns = columns.gather(1, order)
    num_real = count.clamp(min=1)
    # A trailing +inf column keeps every searchsorted position a valid gather index.
    positives = torch.cat([positives, torch.full((b, 1), inf, dtype=keys.dtype, device=device)], dim=1)
    worst = positives.gather(1, (num_real - 1)[:, None])
    unresolved |= (count < 1) | torch.isinf(worst[:, 0])
    if shift is None:
        threshold = worst.masked_fill(unresolved[:, None], -inf)
    else:
        # Raw keys: every entry whose finalised key can be <= the worst positive's. Rounding in
        # the addition (and the clamp at 0) merges only values within a few ulps of
        # max(raw_worst, -shift); the margin is ~8 ulps of the largest term.
        top = torch.maximum(raw_worst, -shift)
        threshold = top + (raw_worst.abs() + shift.abs()) * 2.0**-20
        threshold = threshold.masked_fill_(unresolved[:, None], -inf)

    # Negatives ranked before some positive have a key at most the worst positive's. Hiding the
    # positive columns first (rows come grouped by class, so a few slices do it) leaves only them.
    bounds = torch.stack([start, end], dim=1)
    runs = torch.ones(b, dtype=torch.bool, device=device)
    runs[1:] = (bounds[1:] != bounds[:-1]).any(dim=1)
    run_starts = runs.nonzero().reshape(-1).tolist() + [b]
    for a, z in zip(run_starts[:-1], run_starts[1:]):
        keys[a:z, int(start[a]) : int(end[a])] = inf
    width = rmax + 1
    neg_before = torch.zeros(b, width, dtype=torch.long, device=device)
    candidates = keys <= threshold
    # The density of a few spread rows decides (it only affects speed).
    sample = candidates[:: max(1, b // 8)]
    dense = int(torch.count_nonzero(sample)) > _DENSE_FRACTION * sample.numel()
    if dense:
        # Classes barely separated: most of each row is a candidate. Count them by bins instead,
        # leaving only those that share a bin with a positive to be placed one by one.
        if shift is not None:
            # NaN keys (not looked at above) rank last, like +inf; bins need numbers.
            keys = _settle(keys, shift).nan_to_num_(nan=inf, posinf=inf, neginf=-inf)
        if unresolved.any():
            keys = keys.masked_fill_(unresolved[:, None], inf)
        candidates = _count_by_bins(keys, positives, num_real, unresolved, neg_before)
    flat = candidates.view(-1).nonzero().reshape(-1)
    r = flat // n
    x = keys.view(-1)[flat]
    if shift is not None and not dense:
        x = _settle(x, shift.view(-1)[r])
    if unresolved.any():
        keep = ~unresolved[r]
        flat, r, x = flat[keep], r[keep], x[keep]
    if len(r):
        # Flat position in `positives`: row * width + (number of positives with a smaller key).
        g = _positions(positives, r, x)
        # Equal keys are ranked by reference index (the +inf padding never equals a candidate).
        tied = positives.view(-1)[g] == x
        if tied.any():
            # Rows with very many ties (collapsed embeddings) are left to the search, which
            # sorts them; the others walk their runs of equal positives.
            crowded = torch.bincount(r[tied], minlength=b) > max(_MAX_TIES_PER_ROW, n // 16)
            unresolved |= crowded
            tied &= ~crowded[r]
            index = tied.nonzero().reshape(-1)
            rt = r[index]
            t, c = g[index] - rt * width, flat[index] - rt * n
            extra, unsettled = _tied_positives_before(
                positives, columns, num_real, rt, t, x[index], c, ref_order
            )
            g[index] += extra
            unresolved[rt[unsettled]] = True
        neg_before.view(-1).add_(torch.bincount(g, minlength=b * width))

    # neg_before[:, t] counts negatives with t positives ranked before them: a cumulative sum
    # gives the negatives ranked before each positive.
    before = torch.cumsum(neg_before, dim=1)[:, :rmax]
    ranks = (before + offsets + 1).to(torch.float64)
    ranks = ranks.masked_fill_(offsets >= num_real[:, None], inf)
    return ranks, unresolved


def _count_by_bins(keys, positives, num_real, unresolved, neg_before):
    """Add to ``neg_before[r, t]`` the entries of ``keys`` that certainly lie above exactly ``t``
    positives; return the mask of the others (those sharing a bin with a positive).

    Each row's keys are mapped to ``nb + 2`` bins by a monotone function (uniform between the
    best and the worst positive, plus "better than all" and "worse than all"). An entry in a bin
    without positives lies above exactly the positives of the lower bins. Monotonicity is all
    this needs, so the rounding of the bin arithmetic cannot change a count.
    """
    b, width = positives.shape
    device = keys.device
    nb = max(_MIN_BINS, _BINS_PER_POSITIVE * (width - 1))
    real = (torch.arange(width, device=device) < num_real[:, None]) & ~unresolved[:, None]
    values = positives.masked_fill(~real, 0.0)
    lo = values[:, :1]
    span = values.gather(1, (num_real - 1)[:, None]) - lo
    span = torch.where(span > 0, span, lo.abs().clamp_min(1.0) * 2.0**-20)
    # Best positive -> 1.5, worst -> nb + 0.5: bin 0 is below all positives, bin nb + 1 above.
    scale = ((nb - 1) / span).clamp_max(2.0**100)
    shift = lo * scale - 1.5

    def to_bins(v):
        # Separate correctly rounded operations (no fused multiply-add): the same value gets the
        # same bin in any tensor.
        return torch.mul(v, scale).sub_(shift).clamp_(0, nb + 1).long()

    pos_per_bin = torch.zeros(b, nb + 2, dtype=torch.long, device=device)
    pos_per_bin.scatter_add_(1, to_bins(values), real.long())
    occupied = pos_per_bin > 0
    below = torch.cumsum(pos_per_bin, dim=1) - pos_per_bin
    bins = to_bins(keys)
    per_bin = torch.zeros(b, nb + 2, dtype=torch.long, device=device)
    per_bin.scatter_add_(1, bins, torch.ones(1, dtype=torch.long, device=device).expand_as(bins))
    neg_before.scatter_add_(1, below, per_bin.masked_fill_(occupied, 0))
    return occupied.gather(1, bins)


def _positions(positives, r, x):
    """``r * width + t`` for every candidate, ``t`` being how many of row ``r``'s (sorted)
    positives have a key below ``x``."""
    b, width = positives.shape
    if positives.dtype == torch.float32:
        # One searchsorted over all rows: (row, key) packed into an int64 whose order is the
        # lexicographic one (+0.0 merges -0.0 into 0.0 as == does; the bits of non-negative
        # floats are already in order, negative ones are flipped).
        signed = bool((x < 0).any() or (positives < 0).any())

        def packed(values, rows):
            bits = (values + 0.0).view(torch.int32).to(torch.int64)
            if signed:
                bits = torch.where(bits < 0, (-(2**31) - 1) - bits, bits) + 2**31
            return bits.add_(rows << 32)

        rows = torch.arange(b, device=positives.device)[:, None]
        sequence = packed(positives, rows).reshape(-1)
        return torch.searchsorted(sequence, packed(x, r))
    per_row = torch.bincount(r, minlength=b)
    slot = torch.arange(len(r), device=r.device) - (torch.cumsum(per_row, 0) - per_row)[r]
    padded = torch.full((b, int(per_row.max())), float("inf"), dtype=positives.dtype, device=r.device)
    padded[r, slot] = x
    return torch.searchsorted(positives, padded)[r, slot] + r * width


def _tied_positives_before(positives, columns, num_real, r, t, x, c, ref_order):
    """For negatives whose key equals positives ``t, t+1, ...`` of row ``r``: ``(extra,
    unsettled)``, how many of those equal positives have a lower reference index (they are
    ranked first), and which negatives have a run of equal positives too long to walk."""
    own_index = ref_order[c]
    last = positives.shape[1] - 1
    extra = torch.zeros_like(t)
    active = torch.ones_like(t, dtype=torch.bool)
    # Equal positives are in ascending reference index; walk each run of equal keys.
    for step in range(_MAX_TIE_RUN + 1):
        if not bool(active.any()):
            break
        j = (t + step).clamp(max=last)
        active &= (t + step < num_real[r]) & (positives[r, j] == x)
        if step == _MAX_TIE_RUN:
            break  # still equal after the longest walk: unsettled
        extra += active & (ref_order[columns[r, j.clamp(max=columns.shape[1] - 1)]] < own_index)
    return extra, active
