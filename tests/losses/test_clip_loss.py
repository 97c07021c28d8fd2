"""CLIPLoss: hand-computed values, the learnable clamped temperature, dtypes, gradients, bad
input, two gloo processes against one process on the concatenated batch, and the example."""

import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric.losses import CLIPLoss
from deepmetric.losses.clip_loss import CLIPLoss as CLIPLossFromModule

REPO = Path(__file__).resolve().parents[2]


def pair_batch(dtype=torch.float64):
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=dtype)
    return img, txt


def hand_value(scale):
    # cosines: [[1, c], [0, c]] with c = 1/sqrt(2)
    c = 1 / math.sqrt(2)
    rows = -math.log(math.exp(scale) / (math.exp(scale) + math.exp(scale * c)))
    rows += -math.log(math.exp(scale * c) / (1 + math.exp(scale * c)))
    cols = -math.log(math.exp(scale) / (math.exp(scale) + 1)) + math.log(2)
    return (rows / 2 + cols / 2) / 2


def test_module_path():
    assert CLIPLossFromModule is CLIPLoss


def test_hand_computed_value(dtype):
    img, txt = pair_batch(dtype)
    out = CLIPLoss(init_temperature=0.5)(img, txt)
    assert out.dtype == dtype
    assert out.item() == pytest.approx(hand_value(2.0), rel=1e-6)


def test_embeddings_are_l2_normalised_first():
    img, txt = pair_batch()
    torch.testing.assert_close(CLIPLoss()(img * 7, txt * 0.1), CLIPLoss()(img, txt))


def test_equals_the_symmetric_cross_entropy_of_the_scaled_cosines():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    loss = CLIPLoss()
    logits = (1 / 0.07) * torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(txt, dim=1).T
    targets = torch.arange(9)
    expected = (torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)) / 2
    torch.testing.assert_close(loss(img, txt), expected)
    torch.testing.assert_close(loss.get_logits(img, txt), logits)


def test_logit_scale_parameter_init_and_temperature():
    loss = CLIPLoss()
    assert isinstance(loss.logit_scale, torch.nn.Parameter) and loss.logit_scale.shape == ()
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert loss.temperature == pytest.approx(0.07, rel=1e-6)
    assert list(loss.state_dict()) == ["logit_scale"]


def test_fixed_temperature_is_a_buffer():
    loss = CLIPLoss(init_temperature=0.5, learn_temperature=False)
    assert list(loss.parameters()) == [] and "logit_scale" in loss.state_dict()
    img, txt = pair_batch()
    assert loss(img, txt).item() == pytest.approx(hand_value(2.0), rel=1e-9)


def test_scale_is_clamped_at_max_logit_scale_and_stops_learning_there():
    img, txt = pair_batch()
    loss = CLIPLoss(init_temperature=0.001).double()  # exp(t) = 1000 > 100
    out = loss(img, txt)
    assert out.item() == pytest.approx(hand_value(100.0), rel=1e-9)
    (grad,) = torch.autograd.grad(out, loss.logit_scale)
    assert grad.item() == 0
    assert loss.temperature == pytest.approx(0.01)
    assert CLIPLoss(init_temperature=0.5, max_logit_scale=1.5)(img, txt).item() == pytest.approx(hand_value(1.5))


def test_temperature_gradient_matches_the_formula():
    img, txt = pair_batch()
    loss = CLIPLoss(init_temperature=0.5).double()
    (grad,) = torch.autograd.grad(loss(img, txt), loss.logit_scale)
    # d/dt f(e^t) = f'(s) * s at s = 2
    h = 1e-6
    numeric = (hand_value(2.0 + h) - hand_value(2.0 - h)) / (2 * h) * 2.0
    assert grad.item() == pytest.approx(numeric, rel=1e-6)


def test_gradcheck_embeddings_and_logit_scale():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loss = CLIPLoss(init_temperature=0.3).double()
    assert torch.autograd.gradcheck(loss, (img, txt))

    t = torch.tensor(math.log(1 / 0.3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _loss_with_logit_scale(img, txt, t), (t,))
    (analytic,) = torch.autograd.grad(loss(img, txt), loss.logit_scale)
    (direct,) = torch.autograd.grad(_loss_with_logit_scale(img, txt, t), t)
    torch.testing.assert_close(analytic, direct)


def _loss_with_logit_scale(img, txt, t):
    logits = t.exp() * torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(txt, dim=1).T
    targets = torch.arange(len(img))
    return (torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)) / 2


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_accumulated_in_float32(half):
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(64, 16, generator=g).to(half), torch.randn(64, 16, generator=g).to(half)
    img.requires_grad_(True)
    out = CLIPLoss()(img, txt)
    assert out.dtype == torch.float32
    # The same inputs, widened first: identical up to float32 rounding.
    expected = CLIPLoss()(img.detach().float(), txt.float())
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(out, img)
    assert grad.dtype == half and torch.isfinite(grad).all()


def test_under_autocast_the_loss_stays_float32():
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = CLIPLoss()(img, txt)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, CLIPLoss()(img, txt))


def test_single_pair_is_an_attached_zero():
    img = torch.randn(1, 3, requires_grad=True)
    out = CLIPLoss()(img, torch.randn(1, 3))
    assert out.item() == 0 and out.requires_grad
    (grad,) = torch.autograd.grad(out, img)
    assert torch.all(grad == 0)


def test_training_the_temperature_with_an_optimizer():
    g = torch.Generator().manual_seed(4)
    img = torch.randn(16, 8, generator=g)
    loss = CLIPLoss(init_temperature=1.0)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    before = loss(img, img + 0.01 * torch.randn(16, 8, generator=g))
    for _ in range(10):
        opt.zero_grad()
        loss(img, img).backward()
        opt.step()
    assert loss.temperature < 1.0  # matching pairs: a sharper softmax lowers the loss
    assert loss(img, img).item() < before.item()


@pytest.mark.parametrize(
    "img_shape, txt_shape, match",
    [((4, 3), (5, 3), r"shape \(4, 3\).*\(5, 3\)"), ((4, 3), (4, 2), r"shape \(4, 3\).*\(4, 2\)")],
)
def test_mismatched_batches_are_rejected(img_shape, txt_shape, match):
    with pytest.raises(ValueError, match=match):
        CLIPLoss()(torch.randn(*img_shape), torch.randn(*txt_shape))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="image_embeddings"):
        CLIPLoss()(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="text_embeddings contains NaN"):
        CLIPLoss()(torch.randn(2, 3), torch.tensor([[0.0, float("nan"), 1.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(TypeError, match="same dtype"):
        CLIPLoss()(torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="width"):
        CLIPLoss().get_logits(torch.randn(2, 3), torch.randn(5, 4))


@pytest.mark.parametrize("kwargs", [{"init_temperature": 0}, {"init_temperature": -1}, {"max_logit_scale": 0},
                                    {"init_temperature": float("inf")}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CLIPLoss(**kwargs)


def test_local_loss_switches_change_nothing_in_one_process():
    g = torch.Generator().manual_seed(5)
    img = torch.randn(6, 4, generator=g, dtype=torch.float64)
    txt = torch.randn(6, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(CLIPLoss(local_loss=True, gather_with_grad=True)(img, txt), CLIPLoss()(img, txt))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"local_loss": True}, "gather_with_grad=True"),
     ({"local_loss": True, "gather_with_grad": True, "gather_distributed": False}, "gather_distributed=True"),
     ({"local_loss": 1}, "local_loss to be a bool"),
     ({"gather_with_grad": "yes"}, "gather_with_grad to be a bool")],
)
def test_local_loss_needs_the_gradient_path(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CLIPLoss(**kwargs)


# ---------------------------------------------------------------- two processes (gloo, CPU)

WORLD = 2
# name -> (rows of the global batch held by each rank, CLIPLoss arguments)
LOCAL = {"local_loss": True, "gather_with_grad": True}
DIST_CASES = {
    "equal": ([(0, 5), (5, 10)], {}),
    "unequal": ([(0, 7), (7, 10)], {}),
    "no_gather": ([(0, 5), (5, 10)], {"gather_distributed": False}),
    "local_equal": ([(0, 5), (5, 10)], LOCAL),
    "local_unequal": ([(0, 7), (7, 10)], LOCAL),
    "local_tiled": ([(0, 4), (4, 10)], {**LOCAL, "tile_size": 3}),
    "local_clamped_scale": ([(0, 6), (6, 10)], {**LOCAL, "init_temperature": 0.001}),
    "gather_with_grad_only": ([(0, 7), (7, 10)], {"gather_with_grad": True}),
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 6, generator=g, dtype=torch.float64), torch.randn(10, 5, generator=g, dtype=torch.float64)


def _dist_step(rows, kwargs):
    """One step of two linear encoders: loss value and gradients (encoders, logit_scale)."""
    torch.manual_seed(1)
    image_encoder, text_encoder = torch.nn.Linear(6, 4).double(), torch.nn.Linear(5, 4).double()
    loss_fn = CLIPLoss(**{"init_temperature": 0.2, **kwargs}).double()
    x_img, x_txt = _dist_data()
    loss = loss_fn(image_encoder(x_img[rows[0] : rows[1]]), text_encoder(x_txt[rows[0] : rows[1]]))
    loss.backward()
    model_grads = [p.grad.clone() for m in (image_encoder, text_encoder) for p in m.parameters()]
    return loss.detach(), model_grads, loss_fn.logit_scale.grad.clone()


def _saved_shapes(rows, kwargs):
    """The shapes of the tensors the loss's graph keeps for the backward pass."""
    shapes = set()

    def pack(t):
        shapes.add(tuple(t.shape))
        return t

    img, txt = _dist_data()
    img, txt = img[rows[0] : rows[1], :4], txt[rows[0] : rows[1], :4]  # width 4: no (10, 10) but logits
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = CLIPLoss(**kwargs).double()(img.requires_grad_(), txt)
    loss.backward()
    return shapes


def _dist_worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, (rows, kwargs) in DIST_CASES.items():
            loss, model_grads, scale_grad = _dist_step(rows[rank], kwargs)
            for grad in model_grads:  # what DistributedDataParallel does
                dist.all_reduce(grad)
                grad /= WORLD
            results[name] = (loss, model_grads, scale_grad)
        results["saved_shapes"] = {
            name: _saved_shapes(DIST_CASES[name][0][rank], DIST_CASES[name][1])
            for name in ("unequal", "local_unequal")
        }
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("clip") / "res")
    # fork: the children need no fresh interpreter (importing torch again costs seconds each).
    mp.start_processes(_dist_worker, args=(_free_port(), out), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


@pytest.mark.parametrize(
    "name",
    ["equal", "unequal", "local_equal", "local_unequal", "local_tiled", "local_clamped_scale",
     "gather_with_grad_only"],
)
def test_two_processes_equal_one_process_on_the_concatenated_batch(two_process_results, name):
    # Both encoders (image and text side) and the learnable temperature, after DDP's averaging.
    single_kwargs = {k: v for k, v in DIST_CASES[name][1].items() if k in ("init_temperature",)}
    loss, model_grads, scale_grad = _dist_step((0, 10), {"gather_distributed": False, **single_kwargs})
    tol = dict(rtol=1e-10, atol=1e-12)
    for rank_result in two_process_results:
        dist_loss, dist_model_grads, dist_scale_grad = rank_result[name]
        torch.testing.assert_close(dist_loss, loss, **tol)  # the global loss, in every process
        assert len(dist_model_grads) == 4  # weight and bias of each encoder
        for a, b in zip(dist_model_grads, model_grads):
            assert b.abs().sum() > 0
            torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(dist_scale_grad, scale_grad, **tol)  # not scaled by the world size
    if name == "local_clamped_scale":
        assert scale_grad.item() == 0
    else:
        assert scale_grad.abs().item() > 0


def test_local_loss_keeps_only_local_by_global_logits(two_process_results):
    # 10 pairs as 7 + 3 rows: the gathered path keeps 10 x 10 logits in every process, the
    # local path 7 x 10 and 3 x 10.
    for rank, rows in enumerate(DIST_CASES["local_unequal"][0]):
        shapes = two_process_results[rank]["saved_shapes"]
        assert (10, 10) in shapes["unequal"]
        assert (rows[1] - rows[0], 10) in shapes["local_unequal"]
        assert all(len(s) < 2 or s[0] < 10 or s[1] < 10 for s in shapes["local_unequal"])


def test_without_gathering_each_process_contrasts_its_own_batch(two_process_results):
    for rank, rank_result in enumerate(two_process_results):
        rows = DIST_CASES["no_gather"][0][rank]
        local_loss, _, _ = _dist_step(rows, {"gather_distributed": False})
        torch.testing.assert_close(rank_result["no_gather"][0], local_loss)
    full_loss, _, _ = _dist_step((0, 10), {"gather_distributed": False})
    assert not torch.allclose(two_process_results[0]["no_gather"][0], full_loss)


# ---------------------------------------------------------------- example


def test_example_trains_and_improves_retrieval():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import clip_pairs
    finally:
        sys.path.pop(0)
    before, after = clip_pairs.main(["--steps", "150"])
    assert after > before + 0.3 and after > 0.6
