"""A function of a batch computed a chunk of rows at a time without its graph, and replayed chunk
by chunk in the backward pass (the idea of GradCache: Gao et al., "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", RepL4NLP 2021)::

    out = cat_k function(inputs[chunk_k])

Forward: every chunk runs under ``no_grad``; only ``out`` is kept. Backward, given
``d loss / d out``: for each chunk, the random number generators are set back to the states
that chunk started from (so dropout draws the same masks), ``function`` runs again on the chunk
with its graph, under the autocast state of the forward pass, and the chunk's slice of the
output gradient is taken back to ``params`` (and to inputs that require a gradient). Only one
chunk's graph exists at a time, so the activations' memory is that of one chunk. Afterwards the
generators are back where they were before the replay, and ``buffers`` hold their values from
before it (a replayed batch norm does not update its running statistics twice).

The gradients are those of ``out`` computed chunk by chunk with the graph, which equal those of
``function`` on the whole batch when ``function`` treats rows independently (no batch norm in
training mode, whose statistics are each chunk's).
"""

import contextlib

import torch

_AUTOCAST_DEVICES = ("cpu", "cuda")


def replay_in_chunks(function, inputs, chunk_size, params=(), buffers=()):
    """``cat_k function(*inputs[chunk_k])`` of the module docstring.

    Args:
        function: ``function(*chunk_inputs) -> (rows, ...)`` tensor, e.g. a model.
        inputs: a tensor, or a tuple of tensors with the same number of rows, cut into chunks.
        chunk_size: rows per chunk (a positive int).
        params: the tensors ``function`` reads that need gradients (a model's parameters); a
            tensor not listed here gets no gradient.
        buffers: tensors the replay must leave as the forward pass left them (batch-norm
            statistics).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    inputs = (inputs,) if torch.is_tensor(inputs) else tuple(inputs)
    if not inputs or not all(torch.is_tensor(x) for x in inputs):
        raise TypeError("inputs must be a tensor or a non-empty tuple of tensors")
    rows = {x.shape[0] if x.ndim else None for x in inputs}
    if len(rows) != 1 or None in rows:
        raise ValueError(
            f"inputs must all have the same number of rows, got shapes {[tuple(x.shape) for x in inputs]}"
        )
    return _ChunkedReplay.apply(function, chunk_size, len(inputs), tuple(buffers), *inputs, *params)


def _chunks(n, chunk_size):
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _rng_states():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states):
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _autocast_state():
    return [
        (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        for device in _AUTOCAST_DEVICES
    ]


def _autocast(state):
    stack = contextlib.ExitStack()
    for device, enabled, dtype in state:
        if enabled:
            stack.enter_context(torch.autocast(device_type=device, dtype=dtype))
    return stack


class _ChunkedReplay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function, chunk_size, num_inputs, buffers, *tensors):
        inputs = tensors[:num_inputs]
        states, parts = [], []
        for start, end in _chunks(inputs[0].shape[0], chunk_size):
            states.append(_rng_states())
            parts.append(function(*(x[start:end] for x in inputs)))
        if not parts:
            raise ValueError("replay_in_chunks needs at least one row of input")
        ctx.function, ctx.chunk_size, ctx.num_inputs = function, chunk_size, num_inputs
        ctx.buffers, ctx.rng_states, ctx.autocast = buffers, states, _autocast_state()
        ctx.save_for_backward(*tensors)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_out):
        tensors = ctx.saved_tensors
        inputs, params = tensors[: ctx.num_inputs], tensors[ctx.num_inputs :]
        need = ctx.needs_input_grad[4:]
        need_inputs, need_params = need[: ctx.num_inputs], need[ctx.num_inputs :]
        input_grads = [torch.zeros_like(x) if n else None for x, n in zip(inputs, need_inputs)]
        param_grads = [None] * len(params)
        before = _rng_states()
        kept = [b.detach().clone() for b in ctx.buffers]
        try:
            for (start, end), states in zip(_chunks(inputs[0].shape[0], ctx.chunk_size), ctx.rng_states):
                _set_rng_states(states)
                with torch.enable_grad(), _autocast(ctx.autocast):
                    chunk = [x[start:end].detach().requires_grad_(n) for x, n in zip(inputs, need_inputs)]
                    out = ctx.function(*chunk)
                wanted = [x for x in chunk if x.requires_grad] + [p for p, n in zip(params, need_params) if n]
                if not wanted or not out.requires_grad:
                    continue
                grads = iter(torch.autograd.grad(out, wanted, grad_out[start:end], allow_unused=True))
                for i, x in enumerate(chunk):
                    if x.requires_grad:
                        g = next(grads)
                        if g is not None:
                            input_grads[i][start:end] += g
                for i, n in enumerate(need_params):
                    if n:
                        g = next(grads)
                        if g is not None:
                            param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
                del out, grads
        finally:
            _set_rng_states(before)
            with torch.no_grad():
                for b, value in zip(ctx.buffers, kept):
                    b.copy_(value)
        param_grads = [
            torch.zeros_like(p) if n and g is None else g for p, n, g in zip(params, need_params, param_grads)
        ]
        return (None, None, None, None, *input_grads, *param_grads)
