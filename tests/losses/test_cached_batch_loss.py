"""CachedBatchLoss: the gradients of a chunked, replayed step equal those of the plain full-batch
step (float64) for pair, triplet, tiled and image-text losses, with a miner and a reference set;
dropout is replayed with the masks the forward pass drew, autocast as it ran; a bad chunk size is named;
under torch.distributed (two gloo processes) around DistributedLossWrapper (with a distributed miner)
and the image-text losses, one step equals the plain full-batch single-process step."""

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


# ---------------------------------------------------------------- two processes (gloo, CPU)

WORLD = 2
GLOBAL_ROWS = 12
RANK_ROWS = [(0, 5), (5, 12)]  # unequal local batches


def _metric_case(loss, miner=None, chunk_size=3):
    """(builder of the distributed CachedBatchLoss, plain loss factory, plain miner factory)."""
    from deepmetric.distributed import DistributedLossWrapper, DistributedMinerWrapper

    def build():
        dist_miner = None if miner is None else DistributedMinerWrapper(miner())
        return losses.CachedBatchLoss(model(), DistributedLossWrapper(loss()), chunk_size, miner=dist_miner)

    return build, loss, miner


CACHED_DIST_CASES = {
    "ntxent": _metric_case(lambda: losses.NTXentLoss(temperature=0.3)),
    "ntxent_tiled": _metric_case(lambda: losses.NTXentLoss(temperature=0.3, tile_size=4), chunk_size=2),
    "triplet_with_miner": _metric_case(
        lambda: losses.TripletMarginLoss(margin=0.5),
        miner=lambda: miners.TripletMarginMiner(margin=0.5, type_of_triplets="all"),
    ),
}
# image-text losses: the image side is cached, the text side a plain encoder
PAIR_DIST_CASES = {
    "clip_gathered": lambda: losses.CLIPLoss(init_temperature=0.3),
    "clip_local_rows": lambda: losses.CLIPLoss(init_temperature=0.3, local_loss=True, gather_with_grad=True),
    "siglip_exchange": lambda: losses.SigLIPLoss(init_logit_scale=1.0, init_logit_bias=-1.0),
}


def _text_encoder():
    torch.manual_seed(2)
    return torch.nn.Linear(3, D).double()


def _pair_data():
    x, _ = batch(seed=3, n=GLOBAL_ROWS)
    g = torch.Generator().manual_seed(4)
    return x, torch.randn(GLOBAL_ROWS, 3, generator=g, dtype=torch.float64)


def _metric_step(name, rows=None, ddp=False):
    """Distributed (CachedBatchLoss of the wrapper, on ``rows``; with ``ddp`` its model inside
    DistributedDataParallel) or plain full-batch step."""
    build, loss, miner = CACHED_DIST_CASES[name]
    x, labels = batch(seed=3, n=GLOBAL_ROWS)
    if rows is None:
        net, loss_fn = model(), loss()
        emb = net(x)
        indices = None if miner is None else miner()(emb, labels)
        value = loss_fn(emb, labels, indices)
        params = list(net.parameters())
    else:
        cached = build()
        if ddp:
            cached.model = torch.nn.parallel.DistributedDataParallel(cached.model)
        value = cached(x[rows[0] : rows[1]], labels[rows[0] : rows[1]])
        params = list(cached.model.parameters())
    value.backward()
    return value.detach(), [p.grad.clone() for p in params]


def _pair_step(name, rows=None):
    """(value, image-model gradients, text-encoder gradients, loss-parameter gradients)."""
    x_img, x_txt = _pair_data()
    text_encoder, loss_fn = _text_encoder(), PAIR_DIST_CASES[name]().double()
    if rows is None:
        net = model()
        value = loss_fn(net(x_img), text_encoder(x_txt))
    else:
        cached = losses.CachedBatchLoss(model(), loss_fn, chunk_size=2)
        net = cached.model
        value = cached(x_img[rows[0] : rows[1]], text_encoder(x_txt[rows[0] : rows[1]]))
    value.backward()
    grads = [[p.grad.clone() for p in m.parameters()] for m in (net, text_encoder, loss_fn)]
    return (value.detach(), *grads)


def _cached_worker(rank, port, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)

    def ddp_average(grads):  # what DistributedDataParallel does to the models' gradients
        for grad in grads:
            dist.all_reduce(grad)
            grad /= WORLD
        return grads

    try:
        results = {}
        for name in CACHED_DIST_CASES:
            value, grads = _metric_step(name, RANK_ROWS[rank])
            results[name] = (value, ddp_average(grads))
        results["ntxent_in_ddp"] = _metric_step("ntxent", RANK_ROWS[rank], ddp=True)  # DDP averages
        for name in PAIR_DIST_CASES:
            value, image_grads, text_grads, loss_grads = _pair_step(name, RANK_ROWS[rank])
            results[name] = (value, ddp_average(image_grads), ddp_average(text_grads), loss_grads)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def cached_process_results(tmp_path_factory):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path_factory.mktemp("cached") / "res")
    mp.start_processes(_cached_worker, args=(port, out), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


@pytest.mark.parametrize("name", [*CACHED_DIST_CASES, "ntxent_in_ddp"])
def test_distributed_cached_step_equals_the_plain_full_batch_step(cached_process_results, name):
    value, grads = _metric_step(name.removesuffix("_in_ddp"))
    assert value > 0
    for rank_result in cached_process_results:
        dist_value, dist_grads = rank_result[name]
        # DistributedLossWrapper returns the global loss times the world size
        torch.testing.assert_close(dist_value, WORLD * value, rtol=1e-12, atol=1e-12)
        assert len(dist_grads) == len(grads) == 4
        for a, b in zip(dist_grads, grads):
            assert b.abs().sum() > 0
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(PAIR_DIST_CASES))
def test_distributed_cached_image_text_step_equals_the_plain_full_batch_step(cached_process_results, name):
    value, *want = _pair_step(name)
    for rank_result in cached_process_results:
        dist_value, *got = rank_result[name]
        torch.testing.assert_close(dist_value, value, rtol=1e-12, atol=1e-12)
        for got_grads, want_grads in zip(got, want):  # image model, text encoder, loss parameters
            assert len(got_grads) == len(want_grads) > 0
            for a, b in zip(got_grads, want_grads):
                assert b.abs().sum() > 0
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
