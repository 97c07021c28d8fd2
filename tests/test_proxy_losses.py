"""ProxyNCALoss: hand-computed values, learnable proxies (init, optimizer, dtype, state_dict),
weight regularization, miner weights, gradients, bad inputs and the reference library."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity
from deepmetric.losses import ProxyNCALoss
from deepmetric.miners import MultiSimilarityMiner
from deepmetric.reducers import DoNothingReducer
from deepmetric.regularizers import LpRegularizer
from deepmetric.utils import common_functions as c_f

EMB = [[1.0, 0.0], [1.0, 1.0]]
LABELS = [0, 1]


def make(dtype=torch.float64, **kwargs):
    loss = ProxyNCALoss(2, 2, **kwargs).to(dtype)
    loss.proxies.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=dtype))
    return loss


@pytest.mark.parametrize("scale", [1, 2.5])
def test_hand_computed(scale, dtype):
    loss = make(dtype=dtype, softmax_scale=scale)
    out = loss(torch.tensor(EMB, dtype=dtype), torch.tensor(LABELS))
    # x0 = p0: squared distances 0 and 2; x1 (normalised) is equidistant from both proxies.
    expected = (math.log(1 + math.exp(-2 * scale)) + math.log(2)) / 2
    assert out.dtype == dtype
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_with_a_similarity_and_loss_dict():
    loss = make(distance=CosineSimilarity(), reducer=DoNothingReducer())
    out = loss(torch.tensor(EMB, dtype=torch.float64), torch.tensor(LABELS))["loss"]
    # cosines: x0 -> (1, 0); x1 -> (r, r)
    expected = [math.log(1 + math.exp(-1)), math.log(2)]
    torch.testing.assert_close(out["losses"], torch.tensor(expected, dtype=torch.float64))
    assert out["reduction_type"] == "element" and out["indices"].tolist() == [0, 1]


def test_get_logits_are_raw_distances():
    loss = make()
    logits = loss.get_logits(torch.tensor(EMB, dtype=torch.float64))
    d = 2 - math.sqrt(2)
    torch.testing.assert_close(logits, torch.tensor([[0.0, 2.0], [d, d]], dtype=torch.float64))


def test_batch_of_one_is_a_normal_loss():
    loss = make()
    out = loss(torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True), torch.tensor([0]))
    assert out.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-9)


def test_miner_weights_come_from_the_anchors():
    loss = make(reducer=DoNothingReducer())
    emb, labels = torch.tensor(EMB, dtype=torch.float64), torch.tensor(LABELS)
    # anchors (a1, a2) = (0, 0, 1): element 0 counts twice, 1 once -> weights 1, 1/2.
    it = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([1]), torch.tensor([0]))
    weighted = loss(emb, labels, it)["loss"]["losses"]
    plain = loss(emb, labels)["loss"]["losses"]
    torch.testing.assert_close(weighted, plain * torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_proxies_shape_init_state_dict_and_records():
    torch.manual_seed(0)
    loss = ProxyNCALoss(5, 8)
    assert loss.proxies.shape == (5, 8) and list(loss.state_dict()) == ["proxies"]
    big = ProxyNCALoss(50, 2000)
    assert big.proxies.std().item() == pytest.approx(1.0, rel=0.05)  # normal_
    custom = ProxyNCALoss(3, 4, weight_init_func=c_f.TorchInitWrapper(torch.nn.init.constant_, val=0.5))
    assert torch.all(custom.proxies == 0.5)
    assert {"softmax_scale", "num_classes"} <= set(loss._record_these)
    assert loss.num_classes == 5 and loss.softmax_scale == 1
    assert loss.proxy_labels.tolist() == [0, 1, 2, 3, 4]


def test_own_optimizer_moves_the_proxies_and_dtype_follows_the_input():
    torch.manual_seed(1)
    loss = ProxyNCALoss(4, 6)
    before = loss.proxies.detach().clone()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    loss(torch.randn(12, 6), torch.randint(0, 4, (12,))).backward()
    optimizer.step()
    assert not torch.equal(before, loss.proxies.detach())
    parameter = loss.proxies
    loss(torch.randn(12, 6, dtype=torch.float64), torch.randint(0, 4, (12,)))
    assert loss.proxies is parameter and loss.proxies.dtype == torch.float64
    restored = ProxyNCALoss(4, 6).to(torch.float64)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.proxies, loss.proxies)


def test_weight_regularizer_is_applied_to_the_proxies():
    loss = make(weight_regularizer=LpRegularizer(), weight_reg_weight=0.25)
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss"]
    out = loss(torch.tensor(EMB, dtype=torch.float64), torch.tensor(LABELS))
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2 + 0.25 * 1.0
    assert out.item() == pytest.approx(expected, rel=1e-9)


def test_float16():
    torch.manual_seed(2)
    loss = ProxyNCALoss(4, 8)
    emb, labels = torch.randn(16, 8), torch.randint(0, 4, (16,))
    full = loss(emb, labels)
    half = loss(emb.half(), labels)
    assert half.dtype == torch.float16 and loss.proxies.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=2e-2)


def test_gradcheck_embeddings_and_proxies():
    torch.manual_seed(3)
    loss = ProxyNCALoss(3, 3, softmax_scale=2).to(torch.float64)
    emb = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    proxies = loss.proxies.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def fn(e, p):
        return torch.func.functional_call(loss, {"proxies": p}, (e, labels))

    assert torch.autograd.gradcheck(fn, (emb, proxies))


def test_bad_inputs_name_the_values():
    loss = ProxyNCALoss(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 4"):
        loss(torch.randn(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="embedding_size=4.*6 columns"):
        loss(torch.randn(2, 6), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(2, 4))
    with pytest.raises(ValueError, match="ref_emb"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]), ref_emb=torch.randn(2, 4), ref_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="embedding_size"):
        ProxyNCALoss(3, 0)


@requires_reference
@pytest.mark.parametrize("kwargs", [{}, {"softmax_scale": 4}, {"distance": "CosineSimilarity"}])
@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_reference(kwargs, with_miner, dtype):
    import pytorch_metric_learning.distances as ref_distances
    import pytorch_metric_learning.losses as ref_losses

    import deepmetric.distances as our_distances

    ours_kwargs, ref_kwargs = dict(kwargs), dict(kwargs)
    if "distance" in kwargs:
        ours_kwargs["distance"] = getattr(our_distances, kwargs["distance"])()
        ref_kwargs["distance"] = getattr(ref_distances, kwargs["distance"])()
    torch.manual_seed(4)
    ours = ProxyNCALoss(10, 8, **ours_kwargs).to(dtype)
    theirs = ref_losses.ProxyNCALoss(10, 8, **ref_kwargs).to(dtype)
    theirs.proxies.data.copy_(ours.proxies.data)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 10, (40,))
    it = MultiSimilarityMiner(epsilon=0.3)(emb, labels) if with_miner else None
    a = ours(emb, labels, it)
    g_a = torch.autograd.grad(a, (emb, ours.proxies))
    b = theirs(emb, labels, it)
    g_b = torch.autograd.grad(b, (emb, theirs.proxies))
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.get_logits(emb), theirs.get_logits(emb), rtol=rtol * 10, atol=atol * 10)
    for x, y in zip(g_a, g_b):
        torch.testing.assert_close(x, y, rtol=rtol * 10, atol=atol * 10)


def test_elements_whose_positive_probability_underflows_are_dropped():
    # x1 = -p0 with label 0 at scale 100: probability exp(-400) underflows to 0 in float32 (as
    # in NCALoss and the reference, such elements are left out rather than giving inf).
    loss = make(dtype=torch.float32, softmax_scale=100, reducer=DoNothingReducer())
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    out = loss(emb, torch.tensor([0, 0]))["loss"]
    assert out["indices"].tolist() == [0]
    assert torch.isfinite(out["losses"]).all()
    all_dropped = make(dtype=torch.float32, softmax_scale=100)(emb[1:].requires_grad_(), torch.tensor([0]))
    assert all_dropped.item() == 0 and all_dropped.requires_grad
