"""replay_in_chunks: a function of a batch computed chunk by chunk without its graph and replayed
in the backward pass gives the gradients of the plain computation, replays dropout's masks, and
leaves the random generators and batch-norm statistics as the forward pass left them."""

import pytest
import torch

from deepmetric.ops.chunked_replay import replay_in_chunks


def mlp(dropout=0.0, batch_norm=False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(5, 8)]
    if batch_norm:
        layers.append(torch.nn.BatchNorm1d(8))
    layers += [torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(8, 4)]
    return torch.nn.Sequential(*layers).double()


def batch(n=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64)


def loss_of(out):
    # Mixes rows, as a contrastive loss does: every row's gradient depends on the others.
    return torch.logsumexp(out @ out.T, dim=1).sum() + (out**3).sum()


def grads(model, x):
    return [p.grad.clone() for p in model.parameters()], (x.grad.clone() if x.grad is not None else None)


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 64])
def test_gradients_equal_the_plain_full_batch_computation(chunk_size):
    model, x = mlp(), batch().requires_grad_()
    loss_of(model(x)).backward()
    want_params, want_x = grads(model, x)
    model.zero_grad()
    x.grad = None
    out = replay_in_chunks(model, x, chunk_size, params=list(model.parameters()))
    torch.testing.assert_close(out, model(x))
    loss_of(out).backward()
    got_params, got_x = grads(model, x)
    for a, b in zip(got_params, want_params):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got_x, want_x)


def test_the_forward_keeps_no_graph_of_the_function():
    model, x = mlp(), batch()
    out = replay_in_chunks(model, x, 4, params=list(model.parameters()))
    # One node (the replay) between the output and the parameters: no Linear/Tanh nodes kept.
    assert type(out.grad_fn).__name__ == "_ChunkedReplayBackward"
    assert all(fn is None or "AccumulateGrad" in type(fn).__name__ for fn, _ in out.grad_fn.next_functions)


def test_dropout_masks_are_replayed_and_the_generator_is_left_after_the_forward():
    model, x = mlp(dropout=0.5), batch(12)
    model.train()
    torch.manual_seed(7)
    # The plain computation with the same chunks draws the same masks in the same order.
    plain = torch.cat([model(x[s : s + 5]) for s in range(0, 12, 5)])
    loss_of(plain).backward()
    want, _ = grads(model, x)
    after_plain = torch.get_rng_state()
    model.zero_grad()
    torch.manual_seed(7)
    out = replay_in_chunks(model, x, 5, params=list(model.parameters()))
    torch.testing.assert_close(out, plain.detach())
    after_forward = torch.get_rng_state()
    assert torch.equal(after_forward, after_plain)
    loss_of(out).backward()
    assert torch.equal(torch.get_rng_state(), after_forward)  # the replay drew nothing for good
    got, _ = grads(model, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_batch_norm_statistics_are_not_updated_twice():
    model, x = mlp(batch_norm=True), batch(12)
    model.train()
    buffers = list(model.buffers())
    out = replay_in_chunks(model, x, 4, params=list(model.parameters()), buffers=buffers)
    after_forward = [b.clone() for b in buffers]
    assert int(model[1].num_batches_tracked) == 3  # one update per chunk
    loss_of(out).backward()
    for b, a in zip(buffers, after_forward):
        assert torch.equal(b, a)
    # The gradients are those of the same chunks computed with their graph.
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_of(torch.cat([model(x[s : s + 4]) for s in range(0, 12, 4)])).backward()
    for a, p in zip(got, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_the_replay_runs_under_the_forward_passes_autocast():
    model, x = mlp(), batch()
    model, x = model.float(), x.float()
    seen = []
    model[0].register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = replay_in_chunks(model, x, 4, params=list(model.parameters()))
        plain = torch.cat([model(x[s : s + 4]) for s in range(0, 10, 4)])
    assert out.dtype == torch.bfloat16
    loss_of(out.float()).backward()  # outside the autocast region
    assert seen == [torch.bfloat16] * 9  # 3 chunks forward, 3 plain, 3 replayed
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_of(plain.float()).backward()
    # The plain graph sums the chunks' weight gradients in bfloat16 (autocast caches one cast of
    # each weight), the replay in float32: equal up to bfloat16 rounding.
    for a, p in zip(got, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=2e-2, atol=1e-2)


def test_several_inputs_are_cut_together():
    weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x, scale = batch(7), torch.linspace(0.5, 2.0, 7, dtype=torch.float64)[:, None]
    out = replay_in_chunks(lambda a, b: (a @ weight) * b, (x, scale), 3, params=[weight])
    torch.testing.assert_close(out, (x @ weight) * scale)
    (out**2).sum().backward()
    torch.testing.assert_close(weight.grad, torch.autograd.grad((((x @ weight) * scale) ** 2).sum(), weight)[0])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, None])
def test_chunk_size_must_be_a_positive_int(bad):
    model = mlp()
    with pytest.raises(ValueError, match="chunk_size"):
        replay_in_chunks(model, batch(), bad, params=list(model.parameters()))


def test_inputs_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="same number of rows"):
        replay_in_chunks(lambda a, b: a + b, (batch(4), batch(5)), 2)
    with pytest.raises(TypeError, match="tensor"):
        replay_in_chunks(lambda a: a, [1, 2], 2)
