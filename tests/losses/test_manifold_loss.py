"""ManifoldLoss: an explicit step-by-step computation on tiny inputs, proxy assignment, lambdaC
limits, dtypes, gradients, bad inputs and the reference library as an oracle."""

import math

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric.losses import ManifoldLoss
from deepmetric.reducers import DoNothingReducer


def explicit_loss(emb, proxies, proxy_of, lambda_c, alpha, margin):
    """The loss written out with numpy loops and a power series for the random walk."""
    z = np.concatenate([emb, proxies])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    m, n = len(z), len(emb)
    s = np.exp(np.clip(z @ z.T, 0, None) / 0.5)
    np.fill_diagonal(s, 0)
    d = s.sum(axis=1)
    s_bar = s / np.sqrt(np.outer(d, d))
    # (I - a S)^-1 = sum_t (a S)^t; the spectral radius of a S_bar is at most alpha < 1.
    f, term = np.zeros((m, m)), np.eye(m)
    for _ in range(400):
        f += term
        term = alpha * s_bar @ term
    f *= 1 - alpha

    def part(score):
        total = 0.0
        for i in range(n):
            inner = 0.0
            for k in range(len(proxies)):
                r = score(i, k) - score(i, proxy_of[i]) + margin
                if k != proxy_of[i] and r >= 0:
                    inner += math.exp(r)
            total += math.log(1 + inner)
        return total / n

    def cos(i, k):
        a, b = f[i], f[n + k]
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    ctx = part(cos)
    if lambda_c == math.inf:
        return ctx
    return part(lambda i, k: f[i, n + k]) + lambda_c * ctx


def tiny_case(lambda_c=1.0, margin=0.05, seed=0):
    torch.manual_seed(seed)
    loss = ManifoldLoss(3, K=2, lambdaC=lambda_c, alpha=0.7, margin=margin)
    loss = loss.to(torch.float64)
    emb = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    proxy_of = torch.tensor([0, 1, 1, 0])
    return loss, emb, proxy_of


@pytest.mark.parametrize("lambda_c", [1.0, 0.0, 2.5, math.inf])
@pytest.mark.parametrize("margin", [0.05, 1.0])
def test_matches_explicit_computation(lambda_c, margin):
    loss, emb, proxy_of = tiny_case(lambda_c, margin)
    out = loss(emb, indices_tuple=proxy_of)
    expected = explicit_loss(
        emb.detach().numpy(), loss.proxies.detach().numpy(), proxy_of.tolist(), lambda_c, 0.7, margin
    )
    assert out.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_infinite_lambda_gives_the_context_loss_only():
    loss, emb, proxy_of = tiny_case(math.inf, margin=1.0)
    out = loss(emb, indices_tuple=proxy_of)
    assert out.shape == (1,) and torch.isfinite(out).all()
    no_int, _, _ = tiny_case(1.0, margin=1.0)
    no_int.proxies.data.copy_(loss.proxies.data)
    both = no_int(emb, indices_tuple=proxy_of)
    zero_ctx_weight = ManifoldLoss(3, K=2, lambdaC=0.0, alpha=0.7, margin=1.0).to(torch.float64)
    zero_ctx_weight.proxies.data.copy_(loss.proxies.data)
    intrinsic = zero_ctx_weight(emb, indices_tuple=proxy_of)
    torch.testing.assert_close(out.squeeze(0), both - intrinsic)


def test_loss_dict_is_already_reduced():
    loss, emb, proxy_of = tiny_case()
    loss.reducer = DoNothingReducer()
    entry = loss(emb, indices_tuple=proxy_of)["loss"]
    assert entry["reduction_type"] == "already_reduced" and entry["indices"] is None


def test_single_proxy_gives_attached_zero():
    torch.manual_seed(1)
    loss = ManifoldLoss(4, K=1)
    emb = torch.randn(5, 4, requires_grad=True)
    out = loss(emb)
    assert out.item() == 0
    out.backward()
    assert torch.isfinite(emb.grad).all()


def test_random_assignment_needs_k_rows_and_uses_every_proxy(monkeypatch):
    torch.manual_seed(2)
    loss = ManifoldLoss(4, K=6)
    out = loss(torch.randn(6, 4))
    assert torch.isfinite(out)
    with pytest.raises(ValueError, match="at least 6 rows, got 5"):
        loss(torch.randn(5, 4))


def test_learnable_proxies_state_dict_device_and_optimizer():
    torch.manual_seed(3)
    loss = ManifoldLoss(4, K=3)
    assert loss.proxies.shape == (3, 4) and set(loss.state_dict()) == {"proxies"}
    assert {"K", "l", "lambdaC", "alpha", "margin"} <= set(loss._record_these)
    before = loss.proxies.detach().clone()
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0)
    loss(torch.randn(8, 4), indices_tuple=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])).backward()
    optimizer.step()
    assert not torch.equal(before, loss.proxies.detach())
    copy = ManifoldLoss(4, K=3).to(torch.float64)
    copy.load_state_dict(loss.state_dict())
    torch.testing.assert_close(copy.proxies.detach(), loss.proxies.detach().double())


def test_float16_input_is_computed_in_float32():
    torch.manual_seed(4)
    loss = ManifoldLoss(5, K=3)
    emb = torch.randn(9, 5)
    proxy_of = torch.tensor([0, 1, 2] * 3)
    half = loss(emb.half(), indices_tuple=proxy_of)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, loss(emb, indices_tuple=proxy_of), rtol=1e-2, atol=1e-2)


def test_gradcheck_embeddings_and_proxies():
    loss, emb, proxy_of = tiny_case(margin=1.0)
    proxies = loss.proxies.detach().clone().requires_grad_(True)

    def fn(e, p):
        return torch.func.functional_call(loss, {"proxies": p}, (e,), {"indices_tuple": proxy_of})

    assert torch.autograd.gradcheck(fn, (emb, proxies))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="lambdaC must be non-negative, got lambdaC=-1"):
        ManifoldLoss(4, lambdaC=-1)
    loss = ManifoldLoss(4, K=2)
    emb = torch.randn(4, 4)
    with pytest.raises(ValueError, match="width l=4, got shape \\(4, 3\\)"):
        loss(torch.randn(4, 3))
    with pytest.raises(ValueError, match="labels"):
        loss(emb, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="ref_emb"):
        loss(emb, ref_emb=torch.randn(4, 4))
    with pytest.raises(ValueError, match="length 4"):
        loss(emb, indices_tuple=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="length 4"):
        loss(emb, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match=r"\[0, K=2\), got values from 0 to 2"):
        loss(emb, indices_tuple=torch.tensor([0, 1, 2, 0]))


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {}, {"lambdaC": 0.0, "margin": 0.05}, {"lambdaC": 3.0, "alpha": 0.5, "margin": 0.1},
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_matches_reference(kwargs, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(5)
    ours = ManifoldLoss(8, K=6, **kwargs).to(dtype)
    theirs = ref_losses.ManifoldLoss(8, K=6, **kwargs).to(dtype)
    theirs.proxies.data.copy_(ours.proxies.data)
    emb = torch.randn(30, 8, dtype=dtype, requires_grad=True)
    proxy_of = torch.randint(0, 6, (30,))
    a = ours(emb, indices_tuple=proxy_of)
    g_a = torch.autograd.grad(a, (emb, ours.proxies))
    b = theirs(emb, indices_tuple=proxy_of)
    g_b = torch.autograd.grad(b, (emb, theirs.proxies))
    # The reference inverts in float32 even for float64 input: compare at float32 precision.
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for x, y in zip(g_a, g_b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@requires_reference
def test_random_assignment_draws_like_the_reference():
    import pytorch_metric_learning.losses as ref_losses

    ours, theirs = ManifoldLoss(8, K=4), ref_losses.ManifoldLoss(8, K=4)
    theirs.proxies.data.copy_(ours.proxies.data)
    emb = torch.randn(12, 8)
    torch.manual_seed(6)
    a = ours(emb)
    torch.manual_seed(6)
    b = theirs(emb)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
