"""Visit every triplet of a label mask in blocks, never holding all of them.

A triplet ``(a, p, n)`` is a positive pair ``(a, p)`` and a negative ``n`` of ``a``. Positive
pairs are few (about ``N`` times the class size), so they are listed; their negatives are
visited in chunks of ``(pairs, M)`` cells, the positive pairs in row-major order and each chunk's
negatives in column order. That is the order of ``lmu.get_all_triplets_indices`` (``a``, then
``p``, then ``n`` ascending), so anything listed here comes out as the reference lists it.
Memory is one chunk plus the output, never ``N x P x M``.

- :func:`select_triplets` lists the triplets a condition keeps (miners).
- :func:`reduce_triplets` sums a per-chunk function over all triplets as one autograd node
  whose backward pass recomputes each chunk (losses): memory stays one chunk in both passes.
"""

import torch

# About this many (positive pair, negative) cells are examined at once.
CELLS_PER_BLOCK = 2**22


def chunk_bounds(num_pairs, num_cols):
    """``[(start, end), ...]`` chunks of ``num_pairs`` listed pairs such that a chunk times
    ``num_cols`` fits ``CELLS_PER_BLOCK`` cells."""
    step = max(1, CELLS_PER_BLOCK // max(1, num_cols))
    return [(s, min(s + step, num_pairs)) for s in range(0, num_pairs, step)]


def positive_pair_blocks(pos_mask):
    """Yield ``(a, p)`` chunks of the positive pairs, sized so a chunk times ``M`` fits a block."""
    a, p = torch.where(pos_mask)
    for start, end in chunk_bounds(len(a), pos_mask.shape[1]):
        yield a[start:end], p[start:end]


def select_triplets(pos_mask, neg_mask, keep_fn):
    """``(a, p, n)`` of the triplets for which ``keep_fn(a, p)`` keeps ``n``.

    ``keep_fn(a, p)`` gets a chunk of positive pairs and returns a boolean ``(len(a), M)``
    matrix (it need not apply the negative mask; this function does). A first pass counts, a
    second writes into tensors of exactly that size.
    """
    device = pos_mask.device

    def chunk_masks():
        for a, p in positive_pair_blocks(pos_mask):
            yield a, p, keep_fn(a, p) & neg_mask[a]

    total = sum(int(torch.count_nonzero(mask)) for _, _, mask in chunk_masks())
    out = torch.empty((3, total), dtype=torch.long, device=device)
    filled = 0
    if total == 0:
        return out[0], out[1], out[2]
    for a, p, mask in chunk_masks():
        rows, n = torch.where(mask)
        end = filled + len(rows)
        out[0, filled:end] = a[rows]
        out[1, filled:end] = p[rows]
        out[2, filled:end] = n
        filled = end
    return out[0], out[1], out[2]


def reduce_triplets(reduce_chunk, pos_mask, neg_mask, *matrices):
    """``(sum over chunks of reduce_chunk(...)[0], sum of its counts)``.

    ``matrices`` are ``(N, M)`` tensors (the distance matrix, or per-pair terms) that may need
    gradients. For each chunk of positive pairs ``(a, p)``, ``reduce_chunk`` receives
    ``(ap, an, valid, a)``: per matrix, ``ap`` its ``(K, 1)`` values at the positive pairs and
    ``an`` its ``(K, M)`` rows of the anchors (lists, one entry per matrix), ``valid`` the
    ``(K, M)`` negatives of each anchor, ``a`` the anchor indices. It returns a tensor of a fixed
    shape (summed over chunks, differentiable) and an ``int`` count (summed, not differentiable).

    Returns the summed tensor and the summed count. The gradient is exact: the backward pass
    recomputes each chunk under autograd instead of keeping ``N x P x M`` intermediates.
    """
    out = _ReducedTriplets.apply(reduce_chunk, pos_mask, neg_mask, *matrices)
    return out[0], int(out[1])


def _chunks(pos_mask):
    """The positive-pair chunks, or one empty chunk when there is no positive pair (so that
    ``reduce_chunk`` still defines the output's shape)."""
    chunks = list(positive_pair_blocks(pos_mask))
    if not chunks:
        empty = torch.zeros(0, dtype=torch.long, device=pos_mask.device)
        chunks = [(empty, empty)]
    return chunks


def _chunk_inputs(matrices, a, p):
    return [m[a, p].unsqueeze(1) for m in matrices], [m[a] for m in matrices]


class _ReducedTriplets(torch.autograd.Function):
    @staticmethod
    def forward(ctx, reduce_chunk, pos_mask, neg_mask, *matrices):
        total, count = 0, 0
        for a, p in _chunks(pos_mask):
            value, chunk_count = reduce_chunk(*_chunk_inputs(matrices, a, p), neg_mask[a], a)
            total, count = total + value, count + chunk_count
        ctx.reduce_chunk = reduce_chunk
        ctx.save_for_backward(pos_mask, neg_mask, *matrices)
        count = torch.tensor(count)
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    def backward(ctx, grad, _):
        pos_mask, neg_mask, *matrices = ctx.saved_tensors
        wanted = [i for i in range(len(matrices)) if ctx.needs_input_grad[3 + i]]
        if torch.is_grad_enabled():
            replayed = _replayed_gradients(ctx.reduce_chunk, pos_mask, neg_mask, matrices, wanted, grad)
            return None, None, None, *replayed
        grads = [torch.zeros_like(m) if i in wanted else None for i, m in enumerate(matrices)]
        for a, p in _chunks(pos_mask):
            # Gradients with respect to the chunk's gathered values, scattered back: only the
            # chunk's rows are touched.
            with torch.enable_grad():
                ap = [m[a, p].unsqueeze(1).requires_grad_(i in wanted) for i, m in enumerate(matrices)]
                an = [m[a].requires_grad_(i in wanted) for i, m in enumerate(matrices)]
                value, _ = ctx.reduce_chunk(ap, an, neg_mask[a], a)
                pieces = [x for i in wanted for x in (ap[i], an[i])]
                piece_grads = torch.autograd.grad(value, pieces, grad, allow_unused=True)
            for k, i in enumerate(wanted):
                grad_ap, grad_an = piece_grads[2 * k], piece_grads[2 * k + 1]
                if grad_ap is not None:
                    grads[i].index_put_((a, p), grad_ap.squeeze(1), accumulate=True)
                if grad_an is not None:
                    grads[i].index_add_(0, a, grad_an)
        return None, None, None, *grads


def _replayed_gradients(reduce_chunk, pos_mask, neg_mask, matrices, wanted, grad):
    """Gradients as a differentiable graph (``create_graph=True``): every chunk is replayed on
    the matrices themselves."""
    total = 0
    for a, p in _chunks(pos_mask):
        total = total + reduce_chunk(*_chunk_inputs(matrices, a, p), neg_mask[a], a)[0]
    inputs = [matrices[i] for i in wanted]
    found = torch.autograd.grad(total, inputs, grad, allow_unused=True, create_graph=True)
    grads = [None] * len(matrices)
    for i, g in zip(wanted, found):
        grads[i] = g
    return grads
