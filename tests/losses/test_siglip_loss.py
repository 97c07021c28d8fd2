"""SigLIPLoss: the paper's Algorithm 1 (written here with numpy, pair by pair), a hand-computed
two-pair batch, learnable scale and bias with their gradients, the tiled path equal to the dense
one in value and gradient, half precision computed in float32, and bad inputs named."""

import math

import numpy as np
import pytest
import torch

from deepmetric import losses


def paper_loss(img, txt, t, b):
    """-1/n sum_ij log sigmoid(z_ij (exp(t) x_i . y_j + b)), z = +1 on the diagonal, -1 off."""
    x = img / np.linalg.norm(img, axis=1, keepdims=True)
    y = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = math.exp(t) * float(x[i] @ y[j]) + b
            total += math.log1p(math.exp(-z * logit))  # -log sigmoid(z * logit)
    return total / n


def pairs(n=7, d=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("t,b", [(math.log(10), -10.0), (0.3, 1.5), (2.0, 0.0)])
def test_the_loss_is_the_papers_formula(t, b, dtype):
    img, txt = pairs(dtype=dtype)
    # The module in the batch's dtype, so that t and b are held in it too.
    loss_fn = losses.SigLIPLoss(init_logit_scale=t, init_logit_bias=b).to(dtype)
    got = loss_fn(img, txt).detach()
    # t and b as the module holds them (initialised in the default dtype, float32).
    held_t, held_b = float(loss_fn.logit_scale), float(loss_fn.logit_bias)
    assert held_t == pytest.approx(t, rel=1e-6) and held_b == pytest.approx(b, rel=1e-6)
    t, b = held_t, held_b
    want = paper_loss(img.double().numpy(), txt.double().numpy(), t, b)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.dtype == dtype
    assert math.isclose(float(got), want, rel_tol=tol, abs_tol=tol)


def test_a_hand_computed_pair_of_pairs():
    # Orthonormal rows: x_i . y_j is 1 on the diagonal, 0 off it; scale e^0 = 1, bias 0.
    img = torch.eye(2, dtype=torch.float64)
    got = losses.SigLIPLoss(init_logit_scale=0.0, init_logit_bias=0.0)(img, img.clone())
    # Two diagonal terms -log sigmoid(1), two off-diagonal terms -log sigmoid(0) = log 2.
    want = (2 * math.log1p(math.exp(-1)) + 2 * math.log(2)) / 2
    assert math.isclose(float(got), want, rel_tol=1e-14)


def test_scale_and_bias_learn_and_their_gradients_are_the_formulas():
    img, txt = pairs(n=4)
    loss_fn = losses.SigLIPLoss(init_logit_scale=0.5, init_logit_bias=-1.0).double()
    assert {n for n, _ in loss_fn.named_parameters()} == {"logit_scale", "logit_bias"}
    loss_fn(img, txt).backward()
    x = torch.nn.functional.normalize(img, dim=1)
    y = torch.nn.functional.normalize(txt, dim=1)
    cos = x @ y.T
    z = 2 * torch.eye(4, dtype=torch.float64) - 1
    logits = math.exp(0.5) * cos - 1.0
    # d/dlogit of -log sigmoid(z l) is -z sigmoid(-z l).
    d_logit = -z * torch.sigmoid(-z * logits) / 4
    torch.testing.assert_close(loss_fn.logit_bias.grad, d_logit.sum())
    torch.testing.assert_close(loss_fn.logit_scale.grad, (d_logit * math.exp(0.5) * cos).sum())


def test_fixed_scale_and_bias_are_buffers():
    loss_fn = losses.SigLIPLoss(learn_scale_and_bias=False)
    assert list(loss_fn.parameters()) == []
    assert set(dict(loss_fn.named_buffers())) == {"logit_scale", "logit_bias"}
    assert math.isclose(float(loss_fn.logit_scale), math.log(10), rel_tol=1e-6)
    assert float(loss_fn.logit_bias) == -10.0


@pytest.mark.parametrize("tile", [1, 3, 7, 20])
def test_the_tiled_path_equals_the_dense_one(tile):
    img, txt = pairs(n=7)

    def run(**kw):
        loss_fn = losses.SigLIPLoss(init_logit_scale=1.2, init_logit_bias=-2.0, **kw)
        a, b = img.clone().requires_grad_(), txt.clone().requires_grad_()
        value = loss_fn(a, b)
        value.backward()
        return [value.detach(), a.grad, b.grad, loss_fn.logit_scale.grad, loss_fn.logit_bias.grad]

    for got, want in zip(run(tile_size=tile), run()):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_half_precision_is_computed_in_float32():
    img, txt = pairs(dtype=torch.float16)
    got = losses.SigLIPLoss()(img, txt).detach()
    assert got.dtype == torch.float32
    want = paper_loss(img.double().numpy(), txt.double().numpy(), math.log(10), -10.0)
    assert math.isclose(float(got), want, rel_tol=1e-5)


def test_bad_inputs_are_named():
    img, txt = pairs()
    with pytest.raises(ValueError, match="one text embedding per image embedding"):
        losses.SigLIPLoss()(img, txt[:-1])
    with pytest.raises(ValueError, match="init_logit_bias"):
        losses.SigLIPLoss(init_logit_bias=float("nan"))
    with pytest.raises(ValueError, match="tile_size"):
        losses.SigLIPLoss(tile_size=0)
    with pytest.raises(ValueError, match="NaN"):
        losses.SigLIPLoss()(img * float("nan"), txt)


# ---------------------------------------------------------------- processes (gloo, CPU)

# world size -> name -> (rows of the global batch held by each rank, SigLIPLoss arguments)
SIGLIP_DIST_CASES = {
    2: {"balanced": ([(0, 5), (5, 10)], {}),
        "unbalanced": ([(0, 7), (7, 10)], {}),
        "tiled": ([(0, 4), (4, 10)], {"tile_size": 3}),
        "no_exchange": ([(0, 5), (5, 10)], {"exchange_distributed": False})},
    # three ranks: the next and the previous rank differ, so the ring's direction matters
    3: {"balanced": ([(0, 4), (4, 7), (7, 10)], {}),
        "unbalanced": ([(0, 3), (3, 4), (4, 10)], {}),
        "tiled": ([(0, 4), (4, 5), (5, 10)], {"tile_size": 2}),
        "no_exchange": ([(0, 3), (3, 7), (7, 10)], {"exchange_distributed": False})},
}


def _siglip_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 5, generator=g, dtype=torch.float64)


def _siglip_step(rows, kwargs):
    """One step of two linear encoders: loss value and gradients (encoders, scale, bias)."""
    torch.manual_seed(1)
    image_encoder, text_encoder = torch.nn.Linear(6, 4).double(), torch.nn.Linear(5, 4).double()
    loss_fn = losses.SigLIPLoss(init_logit_scale=1.0, init_logit_bias=-1.0, **kwargs).double()
    x_img, x_txt = _siglip_data()
    loss = loss_fn(image_encoder(x_img[rows[0] : rows[1]]), text_encoder(x_txt[rows[0] : rows[1]]))
    loss.backward()
    model_grads = [p.grad.clone() for m in (image_encoder, text_encoder) for p in m.parameters()]
    return loss.detach(), model_grads, loss_fn.logit_scale.grad.clone(), loss_fn.logit_bias.grad.clone()


def _siglip_worker(rank, world, port, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for name, (rows, kwargs) in SIGLIP_DIST_CASES[world].items():
            loss, model_grads, scale_grad, bias_grad = _siglip_step(rows[rank], kwargs)
            for grad in model_grads:  # what DistributedDataParallel does
                dist.all_reduce(grad)
                grad /= world
            results[name] = (loss, model_grads, scale_grad, bias_grad)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 3], ids=["two_processes", "three_processes"])
def siglip_process_results(request, tmp_path_factory):
    import socket

    import torch.multiprocessing as mp

    world = request.param
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path_factory.mktemp("siglip") / "res")
    mp.start_processes(_siglip_worker, args=(world, port, out), nprocs=world, join=True, start_method="fork")
    return world, [torch.load(f"{out}.{rank}") for rank in range(world)]


@pytest.mark.parametrize("name", ["balanced", "unbalanced", "tiled"])
def test_neighbour_exchange_equals_one_process_on_the_concatenated_batch(siglip_process_results, name):
    world, results = siglip_process_results
    loss, model_grads, scale_grad, bias_grad = _siglip_step((0, 10), {})
    img, txt = _siglip_data()
    torch.manual_seed(1)
    image_encoder, text_encoder = torch.nn.Linear(6, 4).double(), torch.nn.Linear(5, 4).double()
    with torch.no_grad():  # the published formula on the global batch
        expected = paper_loss(image_encoder(img).numpy(), text_encoder(txt).numpy(), 1.0, -1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    tol = dict(rtol=1e-10, atol=1e-12)
    for rank_result in results:
        dist_loss, dist_model_grads, dist_scale_grad, dist_bias_grad = rank_result[name]
        torch.testing.assert_close(dist_loss, loss, **tol)  # the global loss, in every process
        assert len(dist_model_grads) == 4  # both encoders: the image and the text side
        for a, b in zip(dist_model_grads, model_grads):
            assert b.abs().sum() > 0
            torch.testing.assert_close(a, b, **tol)
        assert scale_grad.abs() > 0 and bias_grad.abs() > 0
        torch.testing.assert_close(dist_scale_grad, scale_grad, **tol)  # not scaled by the world size
        torch.testing.assert_close(dist_bias_grad, bias_grad, **tol)


def test_without_the_exchange_each_process_scores_its_own_batch(siglip_process_results):
    world, results = siglip_process_results
    rows = SIGLIP_DIST_CASES[world]["no_exchange"][0]
    for rank, rank_result in enumerate(results):
        own_loss = _siglip_step(rows[rank], {})[0]
        torch.testing.assert_close(rank_result["no_exchange"][0], own_loss)
    assert not torch.allclose(results[0]["no_exchange"][0], _siglip_step((0, 10), {})[0])


def test_exchange_distributed_must_be_a_bool():
    with pytest.raises(ValueError, match="exchange_distributed to be a bool"):
        losses.SigLIPLoss(exchange_distributed=1)
