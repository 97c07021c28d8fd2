"""Rows of every process of ``torch.distributed``, gathered in rank order.

Each process passes its own ``x``; the first dimensions may differ between processes (rows are
padded to the largest for the collective and trimmed after). ``dist.all_gather`` has no
autograd, so gathered copies carry no gradient: :func:`gather_rows_keeping_local_graph` puts
this process's own ``x``, with its graph, back at its rank's place. This is the one
implementation of the collective; the distributed loss and miner wrappers, ``CLIPLoss`` and the
sharded evaluation all use it.

The image-text losses that split the global logits between processes need gradients to cross
processes: :func:`gather_rows_with_grad` (an all-gather whose backward pass sums every
process's gradient), :func:`sum_gradient_over_processes` (for a shared temperature) and
:func:`pass_to_next_rank` (one step of a ring, the gradient going back the other way). Each has
a collective in the backward pass, so every process must call ``backward``.
"""

import torch
import torch.distributed as dist


def is_distributed():
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size(group=None):
    """Processes in ``group`` (the default group when None); 1 without a process group."""
    return dist.get_world_size(group) if is_distributed() else 1


def row_counts(x, group=None):
    """``[rows of x in rank 0, rows in rank 1, ...]`` (one small all-gather)."""
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device), group=group)
    return [int(c) for c in counts]


def all_gather_rows(x, group=None):
    """``[x of rank 0, x of rank 1, ...]``: every process's ``x``, detached, in rank order."""
    size = dist.get_world_size(group)
    x = x.contiguous()
    sizes = row_counts(x, group)
    largest = max(sizes)
    padded = x
    if x.shape[0] < largest:
        padding = x.new_zeros((largest - x.shape[0], *x.shape[1:]))
        padded = torch.cat([x, padding], dim=0)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.detach(), group=group)
    return [part[:n] for part, n in zip(parts, sizes)]


def gather_rows(x, group=None):
    """The rank-ordered concatenation of every process's ``x`` (no gradient)."""
    return torch.cat(all_gather_rows(x, group))


def gather_rows_keeping_local_graph(x, group=None):
    """:func:`gather_rows`, except that this process's rows are ``x`` itself, graph included."""
    parts = all_gather_rows(x, group)
    parts[dist.get_rank(group)] = x
    return torch.cat(parts)


def gather_rows_with_grad(x, group=None):
    """:func:`gather_rows` as an autograd operation: every process's rows in rank order, and in
    the backward pass the gradients all processes computed for the whole result are summed
    (all-reduce) and each process keeps the slice of its own rows. So a row used by another
    process's loss gets that process's gradient back. Every process must call ``backward``
    through it (a collective in the backward pass)."""
    return _GatherRowsWithGrad.apply(x, group)


class _GatherRowsWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        parts = all_gather_rows(x, group)
        start = sum(part.shape[0] for part in parts[: dist.get_rank(group)])
        ctx.rows, ctx.group = (start, start + x.shape[0]), group
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start, end = ctx.rows
        return grad[start:end], None


def sum_gradient_over_processes(x, group=None):
    """``x`` unchanged; in the backward pass its gradient is summed over all processes (an
    all-reduce), so that a tensor every process holds (a shared temperature) gets the gradient
    of the sum of all processes' losses, identical everywhere."""
    return _SumGradient.apply(x, group)


class _SumGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def sum_over_processes(value, group=None):
    """The sum over all processes of a tensor (detached; every process gets the same)."""
    value = value.detach().clone()
    dist.all_reduce(value, group=group)
    return value


def pass_to_next_rank(x, incoming_rows, group=None):
    """One step of a ring: send ``x`` to the next rank (``rank + 1`` modulo the world size) and
    return the ``(incoming_rows, ...)`` tensor the previous rank sent. In the backward pass the
    gradient travels the other way: the received block's gradient goes back to the previous rank
    and ``x`` gets the gradient the next rank computed for it. Every process must take the same
    steps (and call ``backward``) in the same order."""
    return _PassToNextRank.apply(x, incoming_rows, group)


def _exchange(send, send_to, recv, recv_from, group):
    ops = [dist.P2POp(dist.isend, send, send_to, group), dist.P2POp(dist.irecv, recv, recv_from, group)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return recv


def _ring_neighbours(group):
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    to_global = (lambda r: r) if group is None else (lambda r: dist.get_global_rank(group, r))
    return to_global((rank + 1) % size), to_global((rank - 1) % size)


class _PassToNextRank(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, incoming_rows, group):
        following, previous = _ring_neighbours(group)
        ctx.group, ctx.shape = group, x.shape
        received = x.new_empty((incoming_rows, *x.shape[1:]))
        return _exchange(x.contiguous(), following, received, previous, group)

    @staticmethod
    def backward(ctx, grad):
        following, previous = _ring_neighbours(ctx.group)
        grad_x = grad.new_empty(ctx.shape)
        return _exchange(grad.contiguous(), previous, grad_x, following, ctx.group), None, None
