"""Ranks of each query's positives in its full ranking of the reference set, without sorting rows.

Retrieval metrics over the whole ranking (``AccuracyCalculator(k=None)``) only need where the
positives land. With a query's positives in ranking order (values ascending, smaller is better,
equal values by reference index), the j-th positive has rank ``j + #{negatives ranked before
it}``. A negative ranked after the worst positive changes nothing, so only the negatives whose
value is at most the worst positive's are looked at (one comparison pass over the row, then a
compaction); each is placed among the row's sorted positives by ``searchsorted``. For embeddings
where classes are at all separated these candidates are a small fraction of the row, so the cost
is the key matrix plus two passes over it instead of a sort of every row.

The ranking is the one :class:`~deepmetric.evaluation.knn.ExactKNN` returns: by exact values for
squared L2 (any power of the L2 distance) and dot products. The fast values come from one matmul;
a negative whose value lies within the matmul's error bound ``2 B`` of a positive's (see
:mod:`._knn_scores`) is compared with those positives by exact float64 values (then by reference
index), every other pair is already in its exact order.
"""

import torch

from ..distances.lp_distance import LpDistance
from ..distances.snr_distance import SNRDistance
from ._knn_scores import Scorer

# Above this fraction of candidate entries, count by bins (a few dense passes) instead of placing
# every candidate by searchsorted.
_DENSE_FRACTION = 0.15
# Bins per positive when counting by bins: more bins leave fewer entries to place one by one but
# make the per-row histograms longer.
_BINS_PER_POSITIVE = 32
_MIN_BINS = 1024
# A negative close to positives (within the error bound, or tied) is compared with them one at a
# time, up to this many; rows with more of them, or with more close negatives than this (or
# n / 16), are left to the search.
_MAX_TIE_RUN = 16
_MAX_TIES_PER_ROW = 256


def supports_distance(distance):
    """Whether :func:`positive_ranks` ranks by exactly the keys ``ExactKNN`` would use: distances
    whose matrix entry depends on its own query and reference rows only (the built-ins)."""
    return Scorer.mode_of(distance) != "generic" or type(distance) in (LpDistance, SNRDistance)


def positive_ranks(query, reference, query_ids, reference_ids, own_columns, distance, block_rows):
    """Yield ``(rows, ranks, unresolved)`` for blocks of queries.

    Args:
        query: ``(nq, D)`` float tensor. reference: ``(nr, D)`` on the same device and dtype.
        query_ids / reference_ids: int64 class ids; query ``i``'s positives are the references
            with ``reference_ids == query_ids[i]`` (minus its own entry).
        own_columns: ``None``, or per query the reference index that is the query itself; it
            is neither a positive nor a negative (removed by position, as ``ExactKNN`` does with
            ``ref_includes_query``). It must carry the query's own class id.
        distance: the ``ExactKNN`` distance; the ranking is the one ``ExactKNN`` returns.
        block_rows: queries per block (bounds the ``block_rows x nr`` key matrix).

    Yields:
        ``rows`` (b,) query indices, ``ranks`` (b, Rmax) float64: 1-based rank of the j-th best
        positive among all references other than the query itself (``inf`` beyond the row's
        positive count), ``unresolved`` (b,) bool: rows with NaN keys, whose own entry is not
        among its positives, or with too many close values; their ``ranks`` are meaningless.
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
    scorer = Scorer(distance, reference[ref_order])
    negate = bool(distance.is_inverted)
    # L2: rank by squared distances (the same order for any power), finalised (add |q|^2, clamp
    # at 0) lazily, only for the entries that can matter (see _block_ranks).
    lazy = scorer.mode == "l2"
    # Queries of one class share their positive columns: process them together.
    query_order = torch.argsort(query_ids, stable=True)
    for s in range(0, len(query_order), block_rows):
        rows = query_order[s : s + block_rows]
        q = scorer.prepare_query(query[rows])
        keys = scorer.keys(q, 0, nr)
        if lazy:
            shift = (q * q).sum(dim=1, keepdim=True)  # what finalize adds
        else:
            # Finalised keys (power) are what ExactKNN sorts when it does not refine them.
            keys, shift = scorer.finalize(q, keys), None
        if negate:
            keys = keys.neg_()
        if scorer.refines:
            bound = scorer.bound(q)

            def exact(r, c, q=q):
                return scorer.exact_values(q, r, c)
        else:
            bound, exact = torch.zeros(len(rows), dtype=torch.float64, device=device), None
        own = None if own_columns is None else column_of[own_columns[rows]]
        ranks, unresolved = _block_ranks(
            keys, starts[rows], ends[rows], own, ref_order, shift, bound, exact
        )
        yield rows, ranks, unresolved


def _settle(values, shift):
    """Squared L2 finalisation, exactly as ``Scorer.approx_values`` does it (in place)."""
    return values.add_(shift).clamp_min_(0)


def _block_ranks(keys, start, end, own, ref_order, shift=None, bound=None, exact=None):
    """``(ranks, unresolved)`` of one block of rows (see :func:`positive_ranks`); ``keys`` is
    overwritten. With ``shift`` (b, 1), ``keys`` are squared L2 keys before finalisation: only
    the positives and the candidates are finalised (``_settle``). ``bound`` (b,) float64 bounds
    the error of the finalised values; ``exact(rows, columns)`` gives exact float64 values of
    entries (``None``: the values are exact)."""
    b, n = keys.shape
    device = keys.device
    inf = float("inf")
    if bound is None:
        bound = torch.zeros(b, dtype=torch.float64, device=device)
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
        positives = _settle(positives, shift)
        unresolved |= torch.isnan(positives).any(dim=1)
    positives, order = torch.sort(positives.masked_fill_(~real, inf), dim=1, stable=True)
    columns = columns.gather(1, order)
    num_real = count.clamp(min=1)
    # A trailing +inf column keeps every searchsorted position a valid gather index.
    positives = torch.cat([positives, torch.full((b, 1), inf, dtype=keys.dtype, device=device)], dim=1)
    worst = positives.gather(1, (num_real - 1)[:, None])
    unresolved |= (count < 1) | torch.isinf(worst[:, 0])
    # Every negative that may rank before the worst positive: value at most worst + 2 B.
    reach = (worst.double() + 2 * bound.unsqueeze(1)).to(keys.dtype)
    reach = torch.nextafter(reach, torch.full_like(reach, inf))
    if shift is None:
        threshold = reach.masked_fill(unresolved[:, None], -inf)
    else:
        # Raw keys: finalisation adds shift with one rounding (and clamps at 0), so raw keys up
        # to reach - shift, plus ~8 ulps of the largest term, can finalise to at most reach.
        top = torch.maximum(reach - shift, -shift)
        threshold = top + (reach.abs() + shift.abs()) * 2.0**-20
        threshold = threshold.masked_fill_(unresolved[:, None], -inf)

    # Negatives ranked before some positive are below the threshold. Hiding the positive columns
    # first (rows come grouped by class, so a few slices do it) leaves only them.
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
        # leaving only those that share a bin with a positive's window to be placed one by one.
        if shift is not None:
            # NaN keys (not looked at above) rank last, like +inf; bins need numbers.
            keys = _settle(keys, shift).nan_to_num_(nan=inf, posinf=inf, neginf=-inf)
        if unresolved.any():
            keys = keys.masked_fill_(unresolved[:, None], inf)
        candidates = _count_by_bins(keys, positives, num_real, unresolved, bound, neg_before)
    flat = candidates.view(-1).nonzero().reshape(-1)
    r = flat // n
    x = keys.view(-1)[flat]
    if shift is not None and not dense:
        x = _settle(x, shift.view(-1)[r])
    if unresolved.any():
        keep = ~unresolved[r]
        flat, r, x = flat[keep], r[keep], x[keep]
    if len(r):
        # Positives certainly before x: those below x - 2B; those up to x + 2B are close to it.
        margin = 2 * bound[r]
        low = (x.double() - margin).to(x.dtype)
        low = torch.nextafter(low, torch.full_like(low, -inf))
        high = (x.double() + margin).to(x.dtype)
        high = torch.nextafter(high, torch.full_like(high, inf)) if exact is not None else x
        g = _positions(positives, r, low, "left")
        # Windows end at the row's last real positive (x may be +inf, the padding too).
        g_high = torch.minimum(_positions(positives, r, high, "right"), r * width + num_real[r])
        close = (g_high > g).nonzero().reshape(-1)
        if len(close):
            # Rows with very many close negatives (collapsed embeddings) are left to the search,
            # which sorts them; the others compare them with their close positives.
            crowded = torch.bincount(r[close], minlength=b) > max(_MAX_TIES_PER_ROW, n // 16)
            unresolved |= crowded
            close = close[~crowded[r[close]]]
            rc = r[close]
            lo, hi = g[close] - rc * width, g_high[close] - rc * width
            extra, unsettled = _close_positives_before(
                positives, columns, rc, lo, hi, x[close], flat[close] - rc * n, ref_order, exact
            )
            g[close] += extra
            unresolved[rc[unsettled]] = True
        neg_before.view(-1).add_(torch.bincount(g, minlength=b * width))

    # neg_before[:, t] counts negatives with t positives ranked before them: a cumulative sum
    # gives the negatives ranked before each positive.
    before = torch.cumsum(neg_before, dim=1)[:, :rmax]
    ranks = (before + offsets + 1).to(torch.float64)
    ranks = ranks.masked_fill_(offsets >= num_real[:, None], inf)
    return ranks, unresolved


def _count_by_bins(keys, positives, num_real, unresolved, bound, neg_before):
    """Add to ``neg_before[r, t]`` the entries of ``keys`` that certainly lie above exactly ``t``
    positives; return the mask of the others (those sharing a bin with a positive's window).

    Each row's keys are mapped to ``nb + 2`` bins by a monotone function (uniform between the
    best and the worst positive, plus "better than all" and "worse than all"). A bin is occupied
    when it meets the window ``[p - 2B, p + 2B]`` of some positive ``p``; an entry in a bin no
    window meets lies above exactly the positives of the lower bins. Monotonicity is all this
    needs, so the rounding of the bin arithmetic cannot change a count.
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
    if bool((bound > 0).any()):
        _cover_windows(occupied, values, real, bound, to_bins)
    below = torch.cumsum(pos_per_bin, dim=1) - pos_per_bin
    bins = to_bins(keys)
    per_bin = torch.zeros(b, nb + 2, dtype=torch.long, device=device)
    per_bin.scatter_add_(1, bins, torch.ones(1, dtype=torch.long, device=device).expand_as(bins))
    neg_before.scatter_add_(1, below, per_bin.masked_fill_(occupied, 0))
    # Infinite keys (hidden positive columns, NaN) rank after every positive: no need to place.
    return occupied.gather(1, bins) & torch.isfinite(keys)


def _cover_windows(occupied, values, real, bound, to_bins):
    """Mark in ``occupied`` (b, bins) every bin that the window ``[p - 2B, p + 2B]`` of a real
    positive ``p`` meets (its own bin is marked already)."""
    inf = float("inf")
    b, n_bins = occupied.shape
    margin = (2 * bound).unsqueeze(1)
    own = to_bins(values)
    low = (values.double() - margin).to(values.dtype)
    low = to_bins(torch.nextafter(low, torch.full_like(low, -inf)))
    high = (values.double() + margin).to(values.dtype)
    high = to_bins(torch.nextafter(high, torch.full_like(high, inf)))
    # Most windows stay inside their own bin; the others usually reach one neighbour.
    spills = real & ((low != own) | (high != own))
    if not spills.any():
        return
    rows = torch.arange(b, device=values.device).unsqueeze(1).expand_as(low)[spills]
    low, high = low[spills], high[spills]
    flat = occupied.view(-1)
    base = rows * n_bins
    flat[base + low] = True
    flat[base + high] = True
    wide = high - low > 1
    if wide.any():
        starts, lengths, base = low[wide] + 1, high[wide] - low[wide] - 1, base[wide]
        total = int(lengths.sum())
        if total <= 4 * occupied.numel():
            first = torch.cumsum(lengths, 0) - lengths
            step = torch.arange(total, device=values.device) - first.repeat_interleave(lengths)
            flat[(base + starts).repeat_interleave(lengths) + step] = True
        else:
            cover = torch.zeros(b * n_bins + 1, dtype=torch.int32, device=values.device)
            ones = torch.ones_like(starts, dtype=torch.int32)
            cover.index_put_((base + starts,), ones, accumulate=True)
            cover.index_put_((base + starts + lengths,), -ones, accumulate=True)
            # Window ends never cross a row (bins are clamped), so one running sum serves all.
            occupied |= (torch.cumsum(cover, dim=0)[:-1] > 0).view(b, n_bins)


def _positions(positives, r, x, side):
    """``r * width + t`` for every candidate, ``t`` being how many of row ``r``'s (sorted)
    positives have a value below ``x`` (``side="left"``) or at most ``x`` (``"right"``)."""
    b, width = positives.shape
    if positives.dtype == torch.float32:
        # One searchsorted over all rows: (row, value) packed into an int64 whose order is the
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
        return torch.searchsorted(sequence, packed(x, r), side=side)
    per_row = torch.bincount(r, minlength=b)
    slot = torch.arange(len(r), device=r.device) - (torch.cumsum(per_row, 0) - per_row)[r]
    padded = torch.full((b, int(per_row.max())), float("inf"), dtype=positives.dtype, device=r.device)
    padded[r, slot] = x
    return torch.searchsorted(positives, padded, side=side)[r, slot] + r * width


def _close_positives_before(positives, columns, r, lo, hi, x, c, ref_order, exact):
    """For negatives (row ``r``, value ``x``, sorted column ``c``) close to the positives
    ``lo..hi-1`` of their row: ``(extra, unsettled)``, how many of those positives rank before
    the negative (smaller exact value, or equal and a lower reference index), and which
    negatives have more close positives than are compared."""
    last = positives.shape[1] - 1
    span = hi - lo
    unsettled = span > _MAX_TIE_RUN
    steps = int(span.clamp(max=_MAX_TIE_RUN).max()) if len(span) else 0
    own_index = ref_order[c]
    if exact is not None:
        x = exact(r, c)
        # The exact values of the close positives, each computed once.
        wanted = torch.zeros_like(positives, dtype=torch.bool)
        for step in range(steps):
            j = (lo + step).clamp(max=last)
            wanted[r[step < span], j[step < span]] = True
        pos_rows, pos_slots = wanted.nonzero(as_tuple=True)
        pos_exact = torch.zeros_like(positives, dtype=torch.float64)
        slots = pos_slots.clamp(max=columns.shape[1] - 1)
        pos_exact[pos_rows, pos_slots] = exact(pos_rows, columns[pos_rows, slots])
    else:
        pos_exact = positives
    extra = torch.zeros_like(lo)
    for step in range(steps):
        j = (lo + step).clamp(max=last)
        active = (step < span) & ~unsettled
        value = pos_exact[r, j]
        index = ref_order[columns[r, j.clamp(max=columns.shape[1] - 1)]]
        before = (value < x) | ((value == x) & (index < own_index))
        extra += active & before
    return extra, unsettled
