"""Helpers shared by the NCA / FastAP / SmoothAP / PNP / Histogram loss tests."""

import torch

from conftest import tolerance


def value_and_grads(loss_fn, inputs, **call):
    """The loss value and the gradients of every input that requires grad (None otherwise)."""
    value = loss_fn(*inputs, **call)
    leaves = [x for x in list(inputs) + list(call.values()) if torch.is_tensor(x) and x.requires_grad]
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return value, grads


def assert_same_as_reference(ours, theirs, inputs, dtype, scale=10, **call):
    """Values and gradients of two loss objects agree on the same inputs."""
    v_ours, g_ours = value_and_grads(ours, inputs, **call)
    v_theirs, g_theirs = value_and_grads(theirs, inputs, **call)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(v_ours, v_theirs, rtol=rtol * scale, atol=atol * scale)
    for a, b in zip(g_ours, g_theirs):
        if b is None:
            assert a is None or torch.all(a == 0)
            continue
        torch.testing.assert_close(a, b, rtol=rtol * scale, atol=atol * scale)
    return v_ours


def grad_of(value, emb):
    (grad,) = torch.autograd.grad(value, emb)
    return grad
