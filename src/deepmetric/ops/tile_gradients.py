"""The backward step shared by the tiled kernels: one tile's gradient, added to the totals."""

import torch


def add_tile_gradients(grads, leaves, output, upstream, start, end):
    """Adds the gradient of ``sum(upstream * output)`` for one tile of query rows to ``grads``.

    ``leaves`` are the tile's inputs, recomputed with their graph: leaf 0 is the tile's query
    rows ``start:end`` (its gradient goes to ``grads[0][start:end]``); every other leaf is a whole
    tensor shared by all tiles (its gradient is added to ``grads[i]``). Leaves that do not require
    grad, and leaves the output does not depend on, add nothing.
    """
    wanted = [x for x in leaves if x.requires_grad]
    if not wanted:
        return
    tile_grads = iter(torch.autograd.grad(output, wanted, upstream, allow_unused=True))
    for i, x in enumerate(leaves):
        if not x.requires_grad:
            continue
        g = next(tile_grads)
        if g is None:
            continue
        if i == 0:
            grads[0][start:end] += g
        else:
            grads[i] += g
