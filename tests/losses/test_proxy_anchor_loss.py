"""ProxyAnchorLoss: hand-computed values, divisors, learnable proxies (init, optimizer, dtype,
state_dict), weight regularization, miner weights, gradients, bad inputs and the reference."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import LpDistance
from deepmetric.losses import ProxyAnchorLoss
from deepmetric.miners import MultiSimilarityMiner
from deepmetric.reducers import DoNothingReducer, MeanReducer, MultipleReducers
from deepmetric.regularizers import LpRegularizer
from deepmetric.utils import common_functions as c_f

R2 = 1 / math.sqrt(2)
EMB = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
LABELS = [0, 0, 1]


def make(num_classes=2, dtype=torch.float64, **kwargs):
    loss = ProxyAnchorLoss(num_classes, 2, **kwargs).to(dtype)
    proxies = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]][:num_classes]
    loss.proxies.data.copy_(torch.tensor(proxies, dtype=dtype))
    return loss


def lse1(values):
    return math.log(1 + sum(math.exp(v) for v in values))


def expected_terms(alpha=2.0, margin=0.1):
    # cosines: x0 -> (1, 0), x1 -> (R2, R2), x2 -> (0, 1)
    pos = [lse1([alpha * (margin - 1), alpha * (margin - R2)]), lse1([alpha * (margin - 1)])]
    neg = [lse1([alpha * (0 + margin)]), lse1([alpha * (0 + margin), alpha * (R2 + margin)])]
    return pos, neg


def test_hand_computed(dtype):
    loss = make(dtype=dtype, alpha=2.0, margin=0.1)
    emb = torch.tensor(EMB, dtype=dtype, requires_grad=True)
    pos, neg = expected_terms()
    out = loss(emb, torch.tensor(LABELS))
    assert out.dtype == dtype
    assert out.item() == pytest.approx(sum(pos) / 2 + sum(neg) / 2, rel=1e-6)


def test_loss_dict_and_divisors_with_a_proxy_without_positives():
    loss = make(num_classes=3, alpha=2.0, margin=0.1, reducer=DoNothingReducer())
    out = loss(torch.tensor(EMB, dtype=torch.float64), torch.tensor(LABELS))
    pos, neg = expected_terms()
    # Proxy 2 = (-1, 0): no positives (pos term 0); cosines to the batch: -1, -R2, 0.
    neg.append(lse1([2.0 * (-1 + 0.1), 2.0 * (-R2 + 0.1), 2.0 * (0 + 0.1)]))
    assert out["pos_loss"]["divisor"] == 2 and out["neg_loss"]["divisor"] == 3
    assert out["pos_loss"]["reduction_type"] == "element"
    assert out["pos_loss"]["indices"].tolist() == [0, 1, 2]
    torch.testing.assert_close(out["pos_loss"]["losses"], torch.tensor(pos + [0.0], dtype=torch.float64))
    torch.testing.assert_close(out["neg_loss"]["losses"], torch.tensor(neg, dtype=torch.float64))
    total = make(num_classes=3, alpha=2.0, margin=0.1)(torch.tensor(EMB, dtype=torch.float64),
                                                         torch.tensor(LABELS))
    assert total.item() == pytest.approx(sum(pos) / 2 + sum(neg) / 3, rel=1e-9)


def test_distance_flips_the_margins():
    loss = make(alpha=2.0, margin=0.1, distance=LpDistance(normalize_embeddings=False))
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    # d(x0, p0) = 1, d(x0, p1) = 1, d(x1, p0) = 1, d(x1, p1) = sqrt 5; labels (0, 1)
    out = loss(emb, torch.tensor([0, 1]))
    pos = lse1([2.0 * (1 - 0.1)]) + lse1([2.0 * (math.sqrt(5) - 0.1)])
    neg = lse1([2.0 * (-0.1 - 1)]) + lse1([2.0 * (-0.1 - 1)])
    assert out.item() == pytest.approx(pos / 2 + neg / 2, rel=1e-9)


def test_proxies_shape_init_state_dict_and_records():
    torch.manual_seed(0)
    loss = ProxyAnchorLoss(5, 8)
    assert loss.proxies.shape == (5, 8) and list(loss.state_dict()) == ["proxies"]
    # kaiming_normal_(mode="fan_out") on a (5, 8) tensor: std = sqrt(2 / 5)
    big = ProxyAnchorLoss(50, 4000)
    assert big.proxies.std().item() == pytest.approx(math.sqrt(2 / 50), rel=0.05)
    custom = ProxyAnchorLoss(3, 4, weight_init_func=c_f.TorchInitWrapper(torch.nn.init.constant_, val=0.5))
    assert torch.all(custom.proxies == 0.5)
    assert {"num_classes", "alpha", "margin"} <= set(loss._record_these)


def test_own_optimizer_moves_the_proxies_and_dtype_follows_the_input():
    torch.manual_seed(1)
    loss = ProxyAnchorLoss(4, 6)
    before = loss.proxies.detach().clone()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    loss(torch.randn(12, 6), torch.randint(0, 4, (12,))).backward()
    optimizer.step()
    assert not torch.equal(before, loss.proxies.detach())
    parameter = loss.proxies
    loss(torch.randn(12, 6, dtype=torch.float64), torch.randint(0, 4, (12,)))
    assert loss.proxies is parameter and loss.proxies.dtype == torch.float64
    restored = ProxyAnchorLoss(4, 6).to(torch.float64)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.proxies, loss.proxies)


def test_get_logits():
    loss = make()
    logits = loss.get_logits(torch.tensor(EMB, dtype=torch.float64))
    torch.testing.assert_close(logits, torch.tensor([[1, 0], [R2, R2], [0, 1]], dtype=torch.float64))


def test_weight_regularizer_is_applied_to_the_proxies():
    loss = make(alpha=2.0, margin=0.1, weight_regularizer=LpRegularizer(), weight_reg_weight=0.5)
    assert loss.sub_loss_names() == ["pos_loss", "neg_loss", "weight_reg_loss"]
    assert isinstance(loss.reducer, MultipleReducers)
    out = loss(torch.tensor(EMB, dtype=torch.float64), torch.tensor(LABELS))
    pos, neg = expected_terms()
    # LpRegularizer: mean of the proxies' L2 norms (both 1) -> 1, times 0.5
    assert out.item() == pytest.approx(sum(pos) / 2 + sum(neg) / 2 + 0.5, rel=1e-9)


def test_single_sample_and_single_class_are_finite():
    torch.manual_seed(2)
    loss = ProxyAnchorLoss(3, 4)
    emb = torch.randn(1, 4, requires_grad=True)
    out = loss(emb, torch.tensor([2]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_float16():
    torch.manual_seed(3)
    loss = ProxyAnchorLoss(4, 8)
    emb, labels = torch.randn(16, 8), torch.randint(0, 4, (16,))
    full = loss(emb, labels)
    half = loss(emb.half(), labels)
    assert half.dtype == torch.float16 and loss.proxies.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=5e-2)


def test_gradcheck_embeddings_and_proxies():
    torch.manual_seed(4)
    loss = ProxyAnchorLoss(3, 3, alpha=4, reducer=MeanReducer()).to(torch.float64)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    proxies = loss.proxies.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])

    def fn(e, p):
        return torch.func.functional_call(loss, {"proxies": p}, (e, labels))

    assert torch.autograd.gradcheck(fn, (emb, proxies))


def test_bad_inputs_name_the_values():
    loss = ProxyAnchorLoss(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 3, 7"):
        loss(torch.randn(4, 4), torch.tensor([0, 3, 7, 1]))
    with pytest.raises(ValueError, match=r"-1"):
        loss(torch.randn(2, 4), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="embedding_size=4.*5 columns"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(2, 4))
    with pytest.raises(ValueError, match="ref_emb"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]), ref_emb=torch.randn(2, 4), ref_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        ProxyAnchorLoss(0, 4)


@requires_reference
@pytest.mark.parametrize("kwargs", [{}, {"margin": 0.3, "alpha": 8}, {"distance": "LpDistance"}])
@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_reference(kwargs, with_miner, dtype):
    import pytorch_metric_learning.distances as ref_distances
    import pytorch_metric_learning.losses as ref_losses

    import deepmetric.distances as our_distances

    ours_kwargs, ref_kwargs = dict(kwargs), dict(kwargs)
    if "distance" in kwargs:
        ours_kwargs["distance"] = getattr(our_distances, kwargs["distance"])()
        ref_kwargs["distance"] = getattr(ref_distances, kwargs["distance"])()
    torch.manual_seed(5)
    ours = ProxyAnchorLoss(10, 8, **ours_kwargs).to(dtype)
    theirs = ref_losses.ProxyAnchorLoss(10, 8, **ref_kwargs).to(dtype)
    theirs.proxies.data.copy_(ours.proxies.data)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 7, (40,))
    it = MultiSimilarityMiner(epsilon=0.3)(emb, labels) if with_miner else None
    a = ours(emb, labels, it)
    g_a = torch.autograd.grad(a, (emb, ours.proxies))
    b = theirs(emb, labels, it)
    g_b = torch.autograd.grad(b, (emb, theirs.proxies))
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)
    for x, y in zip(g_a, g_b):
        torch.testing.assert_close(x, y, rtol=rtol * 10, atol=atol * 10)


def test_large_logits_stay_finite_and_match_the_masked_log_sum_exp():
    # Unnormalised dot products of size ~100 with alpha=32 put the exponents in the thousands;
    # positive and negative terms are each shifted by their own maximum.
    from deepmetric.distances import DotProductSimilarity

    torch.manual_seed(6)
    loss = ProxyAnchorLoss(4, 5, distance=DotProductSimilarity(normalize_embeddings=False), reducer=DoNothingReducer())
    loss = loss.to(torch.float64)
    emb = (10 * torch.randn(12, 5, dtype=torch.float64)).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2])  # class 3 has no positive
    out = loss(emb, labels)
    sims = emb @ loss.proxies.T
    pos_mask = labels.unsqueeze(1) == torch.arange(4)
    zero = torch.zeros(1, 4, dtype=torch.float64)
    pos = torch.logsumexp(torch.cat([(32 * (0.1 - sims)).masked_fill(~pos_mask, -math.inf), zero]), dim=0)
    neg = torch.logsumexp(torch.cat([(32 * (sims + 0.1)).masked_fill(pos_mask, -math.inf), zero]), dim=0)
    torch.testing.assert_close(out["pos_loss"]["losses"], pos)
    torch.testing.assert_close(out["neg_loss"]["losses"], neg)
    assert out["pos_loss"]["losses"][3] == 0
    (out["pos_loss"]["losses"].sum() + out["neg_loss"]["losses"].sum()).backward()
    expected = torch.autograd.grad(pos.sum() + neg.sum(), emb)[0]
    torch.testing.assert_close(emb.grad, expected)
