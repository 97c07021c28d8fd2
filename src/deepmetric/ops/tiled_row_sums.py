"""Row sums of an elementwise pair function that is never held whole.

With ``T`` the ``(N, M)`` matrix whose rows ``start:end`` are
``term(start, query[start:end], ref, *params)``::

    out_i = sum_j T_ij

``T`` is computed ``tile_size`` rows at a time; the forward pass keeps only the ``(N,)`` sums and
the backward pass computes each tile again with its graph and takes ``d out_i / d T_ij = 1``
back through ``term`` by autograd, one tile at a time, so memory grows as
``O(tile_size x M + N x D)`` instead of ``O(N x M)``. Every tensor that ``term`` reads and that
needs a gradient must come in ``params``. SigLIP's pairwise sigmoid loss is such a sum.
"""

import torch

from .tile_gradients import add_tile_gradients


def tiled_row_sums(term, query, ref, params=(), tile_size=1024):
    """``(N,)`` row sums of the module docstring.

    Args:
        term: ``term(start, query_rows, ref, *params) -> (rows, M)``, differentiable; ``start``
            is the index of the tile's first row in ``query``.
        query: ``(N, ...)`` tensor whose rows are cut into tiles.
        ref: ``(M, ...)`` tensor passed whole to every tile.
        params: further tensors ``term`` reads.
        tile_size: rows per tile (a positive int).
    """
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    return _TiledRowSums.apply(term, tile_size, query, ref, *params)


def _tiles(n, tile_size):
    return [(s, min(s + tile_size, n)) for s in range(0, n, tile_size)]


class _TiledRowSums(torch.autograd.Function):
    @staticmethod
    def forward(ctx, term, tile_size, query, ref, *params):
        parts = [term(start, query[start:end], ref, *params).sum(dim=1)
                 for start, end in _tiles(query.shape[0], tile_size)]
        if parts:
            out = torch.cat(parts)
        else:
            out = term(0, query[:0], ref, *params).sum(dim=1)
        ctx.functions = (term, tile_size)
        ctx.save_for_backward(query, ref, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        term, tile_size = ctx.functions
        query, ref, *params = ctx.saved_tensors
        need = ctx.needs_input_grad[2:]
        grads = [torch.zeros_like(x) if n else None for x, n in zip((query, ref, *params), need)]
        for start, end in _tiles(query.shape[0], tile_size):
            with torch.enable_grad():
                leaves = [query[start:end], ref, *params]
                leaves = [x.detach().requires_grad_(n) for x, n in zip(leaves, need)]
                t = term(start, *leaves)
            upstream = grad_out[start:end, None].to(t.dtype).expand_as(t)
            add_tile_gradients(grads, leaves, t, upstream, start, end)
            del t
        return (None, None, *grads)
