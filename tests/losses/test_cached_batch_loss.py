"""CachedBatchLoss: the gradients of a chunked, replayed step equal those of the plain full-batch
step (float64) for pair, triplet, tiled and image-text losses, with a miner and a reference set;
dropout is replayed with the masks the forward pass drew, autocast as it ran; a bad chunk size is named."""

import pytest
import torch

from deepmetric import losses, miners

N, IN, D = 14, 5, 4


def model(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(IN, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout), torch.nn.Linear(16, D)
    ).double()


def batch(seed=1, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def step(module_loss, params, *args, **kwargs):
    for p in params:
        p.grad = None
    value = module_loss(*args, **kwargs)
    value.backward()
    return value.detach(), [p.grad.clone() for p in params]


def assert_same_step(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


LOSSES = {
    "ContrastiveLoss": lambda: losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9),
    "NTXentLoss": lambda: losses.NTXentLoss(temperature=0.3),
    "NTXentLoss(tiled)": lambda: losses.NTXentLoss(temperature=0.3, tile_size=4),
    "SupConLoss": lambda: losses.SupConLoss(),
    "TripletMarginLoss": lambda: losses.TripletMarginLoss(margin=0.3),
    "MultiSimilarityLoss": lambda: losses.MultiSimilarityLoss(),
}


@pytest.mark.parametrize("chunk_size", [1, 3, N, 100])
@pytest.mark.parametrize("name", list(LOSSES))
def test_gradients_equal_the_plain_full_batch_step(name, chunk_size):
    net, (x, labels) = model(), batch()
    loss_fn = LOSSES[name]()
    params = list(net.parameters())
    want = step(lambda: loss_fn(net(x), labels), params)
    got = step(losses.CachedBatchLoss(net, loss_fn, chunk_size), params, x, labels)
    assert_same_step(got, want)


def test_with_a_miner_and_a_reference_set():
    net, (x, labels) = model(), batch()
    ref, ref_labels = torch.randn(6, D, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fn, miner = losses.TripletMarginLoss(margin=0.5), miners.TripletMarginMiner(margin=0.5)
    params = list(net.parameters())

    def plain():
        emb = net(x)
        return loss_fn(emb, labels, miner(emb, labels, ref, ref_labels), ref, ref_labels)

    want = step(plain, params)
    cached = losses.CachedBatchLoss(net, loss_fn, 4, miner=miner)
    assert_same_step(step(cached, params, x, labels, ref_emb=ref, ref_labels=ref_labels), want)


def test_clip_loss_and_its_temperature():
    image_net, text_net = model(seed=0), model(seed=1)
    images, _ = batch(seed=2)
    texts, _ = batch(seed=3)
    clip = losses.CLIPLoss(init_temperature=0.2)
    params = [*image_net.parameters(), *text_net.parameters(), clip.logit_scale]
    want = step(lambda: clip(image_net(images), text_net(texts)), params)
    # The image tower cached, the text embeddings computed plainly and handed through.
    cached = losses.CachedBatchLoss(image_net, clip, 5)
    assert_same_step(step(lambda: cached(images, text_net(texts)), params), want)
    assert any(p is clip.logit_scale for p in cached.parameters())
    # Both towers cached: the text tower through a second wrapper's embed.
    text_cache = losses.CachedBatchLoss(text_net, None, 3)
    assert_same_step(step(lambda: cached(images, text_cache.embed(texts)), params), want)


def test_dropout_is_replayed_with_the_forward_passes_masks():
    net, (x, labels) = model(dropout=0.5), batch()
    loss_fn = losses.NTXentLoss(temperature=0.3)
    params = list(net.parameters())

    def chunked_with_graph():
        # The same random draws as the cached forward pass: chunk by chunk from one seed.
        torch.manual_seed(7)
        return loss_fn(torch.cat([net(x[s : s + 4]) for s in range(0, N, 4)]), labels)

    want = step(chunked_with_graph, params)
    torch.manual_seed(7)
    got = step(losses.CachedBatchLoss(net, loss_fn, 4), params, x, labels)
    assert_same_step(got, want)
    # Dropout did act (a different seed gives another value), so the check above can fail.
    torch.manual_seed(8)
    assert not torch.equal(step(losses.CachedBatchLoss(net, loss_fn, 4), params, x, labels)[0], got[0])


def test_autocast_is_replayed_as_the_forward_pass_ran():
    net, (x, labels) = model(), batch()
    net, x = net.float(), x.float()
    loss_fn = losses.NTXentLoss(temperature=0.3)
    params = list(net.parameters())
    seen = []
    net[0].register_forward_hook(lambda module, args, out: seen.append((torch.is_grad_enabled(), out.dtype)))
    full_precision = step(lambda: loss_fn(net(x), labels), params)
    for p in params:
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_value = loss_fn(torch.cat([net(x[s : s + 4]) for s in range(0, N, 4)]), labels).detach()
        seen.clear()
        cached = losses.CachedBatchLoss(net, loss_fn, 4)
        value = cached(x, labels)
    value.backward()  # outside the autocast region, as a training step does
    # Four chunks without a graph, then four replayed with it, all in bfloat16.
    assert seen == [(False, torch.bfloat16)] * 4 + [(True, torch.bfloat16)] * 4
    torch.testing.assert_close(value.detach(), want_value, rtol=0, atol=0)
    for p, g in zip(params, full_precision[1]):
        torch.testing.assert_close(p.grad, g, rtol=0.05, atol=0.01)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, None])
def test_a_bad_chunk_size_is_named(bad):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        losses.CachedBatchLoss(model(), losses.NTXentLoss(), bad)


def test_the_model_must_be_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        losses.CachedBatchLoss(lambda x: x, losses.NTXentLoss(), 4)
