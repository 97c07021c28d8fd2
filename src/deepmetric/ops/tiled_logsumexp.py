"""Row log-sum-exp of a similarity matrix that is never held whole.

With ``S = similarity(query, ref, *params)`` of shape ``(N, M)`` and a boolean mask ``K``::

    lse_i  = log sum_{j: K_ij} exp(S_ij)
    wsum_i = sum_j W_ij S_ij                      (only when ``weights`` is given)

``S`` is computed ``tile_size`` rows at a time; the forward pass keeps only the ``(N,)``
results, and the backward pass computes each tile again, so memory grows as
``O(tile_size x M + N x D)`` instead of ``O(N x M)`` (the idea of Inf-CL: Cheng et al.,
"Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss", 2024).
The gradient with respect to the tile is::

    d lse_i / d S_ij  = K_ij exp(S_ij - lse_i)    (the softmax over the kept entries)
    d wsum_i / d S_ij = W_ij

and is taken back through ``similarity`` by autograd on the recomputed tile. Every tensor that
``similarity`` reads and that needs a gradient must come in ``params`` (a tensor it captures
from outside gets none). A row that keeps nothing gives the finite sentinel ``neg_inf(dtype)``
(it acts as ``-inf`` in a later ``logaddexp`` without producing NaN) and no gradient.
"""

import torch

from .dtypes import neg_inf
from .tile_gradients import add_tile_gradients


def tiled_logsumexp(similarity, query, ref, params=(), keep=None, weights=None, tile_size=1024):
    """``lse`` (or ``(lse, wsum)`` with ``weights``) of the module docstring, shape ``(N,)``.

    Args:
        similarity: ``similarity(query_rows, ref, *params) -> (rows, M)``, differentiable.
        query: ``(N, ...)`` tensor whose rows are cut into tiles.
        ref: ``(M, ...)`` tensor passed whole to every tile.
        params: further tensors ``similarity`` reads (a learnable temperature, say).
        keep: ``keep(start, end) -> bool (end - start, M)``, the mask ``K`` of rows
            ``start:end``; None keeps everything.
        weights: ``weights(start, end) -> (end - start, M)``, the rows of ``W``; None for no
            weighted sum.
        tile_size: rows per tile (a positive int).
    """
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    out = _TiledLogSumExp.apply(similarity, keep, weights, tile_size, query, ref, *params)
    return out if weights is not None else out[0]


def _tiles(n, tile_size):
    return [(s, min(s + tile_size, n)) for s in range(0, n, tile_size)]


def _kept_logsumexp(s, kept):
    """Masked row log-sum-exp of one tile (a kept-nothing row gives the sentinel)."""
    sentinel = neg_inf(s.dtype)
    filled = s if kept is None else s.masked_fill(~kept, sentinel)
    top = filled.amax(dim=1, keepdim=True)
    lse = torch.log(torch.exp(filled - top).sum(dim=1)) + top.squeeze(1)
    if kept is None:
        return lse
    return torch.where(kept.any(dim=1), lse, torch.full_like(lse, sentinel))


class _TiledLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, similarity, keep, weights, tile_size, query, ref, *params):
        lse_parts, wsum_parts = [], []
        for start, end in _tiles(query.shape[0], tile_size):
            s = similarity(query[start:end], ref, *params)
            lse_parts.append(_kept_logsumexp(s, None if keep is None else keep(start, end)))
            if weights is not None:
                wsum_parts.append((weights(start, end).to(s.dtype) * s).sum(dim=1))
            del s
        lse = _cat(lse_parts, query, ref, params, similarity)
        wsum = torch.cat(wsum_parts) if weights is not None else lse.new_zeros(0)
        ctx.functions = (similarity, keep, weights, tile_size)
        ctx.save_for_backward(query, ref, lse, *params)
        if weights is None:
            ctx.mark_non_differentiable(wsum)
        return lse, wsum

    @staticmethod
    def backward(ctx, grad_lse, grad_wsum):
        similarity, keep, weights, tile_size = ctx.functions
        query, ref, lse, *params = ctx.saved_tensors
        need = ctx.needs_input_grad[4:]
        grads = [torch.zeros_like(x) if n else None for x, n in zip((query, ref, *params), need)]
        for start, end in _tiles(query.shape[0], tile_size):
            with torch.enable_grad():
                leaves = [query[start:end], ref, *params]
                leaves = [x.detach().requires_grad_(n) for x, n in zip(leaves, need)]
                s = similarity(*leaves)
            with torch.no_grad():
                kept = None if keep is None else keep(start, end)
                row_lse = lse[start:end, None]
                g_s = torch.exp(s - row_lse)
                if kept is not None:
                    g_s = torch.where(kept, g_s, 0.0)
                g_s = g_s * grad_lse[start:end, None].to(g_s.dtype)
                if weights is not None:
                    g_s = g_s + weights(start, end).to(s.dtype) * grad_wsum[start:end, None]
            add_tile_gradients(grads, leaves, s, g_s, start, end)
            del s, g_s
        return (None, None, None, None, *grads)


def _cat(parts, query, ref, params, similarity):
    if parts:
        return torch.cat(parts)
    # No rows at all: an empty result of the dtype similarity would give.
    with torch.no_grad():
        dtype = similarity(query[:0], ref, *params).dtype
    return torch.empty(0, dtype=dtype, device=query.device)
