"""ProxyNCALoss: hand-computed values, proxies as parameters, regularization, dtypes, gradients,
bad input and the reference library as an oracle."""

import math

import pytest
import torch
from _ranking_helpers import grad_of

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import ProxyNCALoss
from deepmetric.losses.proxy_losses import ProxyNCALoss as ProxyNCALossFromModule
from deepmetric.reducers import DoNothingReducer
from deepmetric.regularizers import LpRegularizer

RAW_SQ_L2 = dict(distance=LpDistance(normalize_embeddings=False, power=2))


def line_loss(dtype=torch.float64, **kwargs):
    """Proxies at 0 (class 0) and 2 (class 1) on a line."""
    loss = ProxyNCALoss(2, 1, **RAW_SQ_L2, **kwargs).to(dtype)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[0.0], [2.0]]))
    return loss


def test_module_path_matches_the_reference():
    assert ProxyNCALossFromModule is ProxyNCALoss


def test_hand_computed_value(dtype):
    emb = torch.tensor([[0.0], [1.5]], dtype=dtype)
    out = line_loss(dtype)(emb, torch.tensor([0, 1]))
    # x=0, class 0: d = (0, 4) -> -log(1 / (1 + e^-4)); x=1.5, class 1: d = (2.25, 0.25)
    expected = (math.log1p(math.exp(-4)) + math.log1p(math.exp(-2))) / 2
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_softmax_scale_is_passed_through_kwargs():
    emb = torch.tensor([[0.0], [1.5]], dtype=torch.float64)
    loss = line_loss(softmax_scale=3)
    assert loss.softmax_scale == 3
    out = loss(emb, torch.tensor([0, 1]))
    expected = (math.log1p(math.exp(-12)) + math.log1p(math.exp(-6))) / 2
    assert out.item() == pytest.approx(expected, rel=1e-9)


def test_batch_of_one_is_computed_against_the_proxies():
    out = line_loss()(torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([1]))
    # d = (0.25, 2.25): -log(e^-2.25 / (e^-0.25 + e^-2.25))
    assert out.item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-9)


def test_similarity_logits_are_not_negated():
    loss = ProxyNCALoss(2, 2, distance=CosineSimilarity(), reducer=DoNothingReducer()).double()
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    out = loss(torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.tensor([0]))["loss"]
    assert out["losses"].item() == pytest.approx(math.log(2), rel=1e-12)


def test_miner_weights_count_anchors_only():
    emb = torch.tensor([[0.0], [1.5]], dtype=torch.float64)
    # index 0 appears as an anchor twice, index 1 once; positives/negatives are ignored.
    triplets = (torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), torch.tensor([1, 1, 1]))
    out = line_loss(reducer=DoNothingReducer())(emb, torch.tensor([0, 1]), triplets)["loss"]
    expected = torch.tensor([math.log1p(math.exp(-4)), math.log1p(math.exp(-2)) / 2], dtype=torch.float64)
    torch.testing.assert_close(out["losses"], expected)
    assert out["indices"].tolist() == [0, 1]


def test_proxies_are_a_parameter_with_the_reference_shape_and_init():
    torch.manual_seed(0)
    loss = ProxyNCALoss(5, 3)
    assert isinstance(loss.proxies, torch.nn.Parameter) and loss.proxies.shape == (5, 3)
    assert list(loss.state_dict()) == ["proxies"]
    torch.manual_seed(0)
    expected = torch.nn.init.normal_(torch.empty(5, 3))
    torch.testing.assert_close(loss.proxies.data, expected)
    assert loss.proxy_labels.tolist() == [0, 1, 2, 3, 4]


def test_custom_weight_init_func_is_applied():
    loss = ProxyNCALoss(3, 2, weight_init_func=lambda w: torch.nn.init.constant_(w, 0.5))
    assert torch.all(loss.proxies == 0.5)


def test_proxies_receive_gradients_and_train():
    torch.manual_seed(0)
    loss = ProxyNCALoss(3, 4)
    emb = torch.randn(12, 4)
    labels = torch.arange(12) % 3
    opt = torch.optim.SGD(loss.parameters(), lr=1.0)
    first = loss(emb, labels)
    for _ in range(20):
        opt.zero_grad()
        value = loss(emb, labels)
        value.backward()
        opt.step()
    assert loss(emb, labels).item() < first.item()


def test_state_dict_round_trip():
    a, b = ProxyNCALoss(4, 3), ProxyNCALoss(4, 3)
    b.load_state_dict(a.state_dict())
    emb, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(a(emb, labels), b(emb, labels))


def test_weight_regularizer_on_proxies():
    loss = line_loss(reducer=DoNothingReducer(), weight_regularizer=LpRegularizer(), weight_reg_weight=2)
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss"]
    out = loss(torch.tensor([[0.0], [1.5]], dtype=torch.float64), torch.tensor([0, 1]))
    # LpRegularizer: mean L2 norm of the proxy rows = (0 + 2) / 2, times the weight 2
    assert out["weight_reg_loss"]["reduction_type"] == "already_reduced"
    assert out["weight_reg_loss"]["losses"].item() == pytest.approx(2.0)


def test_get_logits_is_the_raw_distance_to_the_proxies():
    loss = line_loss()
    logits = loss.get_logits(torch.tensor([[1.0], [3.0]], dtype=torch.float64))
    torch.testing.assert_close(logits, torch.tensor([[1.0, 1.0], [9.0, 1.0]], dtype=torch.float64))


def test_float16_matches_float32_and_casts_proxies():
    torch.manual_seed(0)
    loss = ProxyNCALoss(4, 8)
    emb, labels = torch.randn(16, 8), torch.randint(0, 4, (16,))
    full = loss(emb, labels)
    half = loss(emb.half(), labels)
    assert half.dtype == torch.float16 and loss.proxies.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_gradcheck_embeddings_and_proxies():
    torch.manual_seed(1)
    loss = ProxyNCALoss(3, 3, softmax_scale=2).double()
    emb = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    proxies = loss.proxies.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (emb,))
    # The proxies' gradient of the loss equals the direct formula's.
    (g_loss,) = torch.autograd.grad(loss(emb.detach(), labels), loss.proxies)
    direct = torch.nn.functional.cross_entropy(-2 * LpDistance(power=2)(emb.detach(), proxies), labels)
    torch.testing.assert_close(g_loss, grad_of(direct, proxies))


def test_labels_outside_the_classes_are_rejected():
    loss = ProxyNCALoss(3, 2)
    with pytest.raises(ValueError, match=r"\[0, 3\).*got -1, 3"):
        loss(torch.randn(4, 2), torch.tensor([0, 3, -1, 1]))


def test_wrong_embedding_width_is_rejected():
    loss = ProxyNCALoss(3, 2)
    with pytest.raises(ValueError, match="embedding_size=2.*5 columns"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="embedding_size=2"):
        loss.get_logits(torch.randn(4, 5))


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_bad_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match="num_classes"):
        ProxyNCALoss(bad, 3)
    with pytest.raises(ValueError, match="embedding_size"):
        ProxyNCALoss(3, bad)


def test_labels_required_and_ref_emb_not_supported():
    loss = ProxyNCALoss(3, 2)
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(4, 2))
    with pytest.raises(ValueError, match="ref_emb"):
        loss(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), ref_emb=torch.randn(2, 2), ref_labels=torch.tensor([0, 1]))


def test_records_hyper_parameters():
    loss = ProxyNCALoss(3, 2, softmax_scale=4)
    assert loss._record_these == ["softmax_scale", "num_classes"]
    assert loss.num_classes == 3  # the reference registers the name without storing it (reads 0)


DISTANCES = {
    "default": lambda lib: {},
    "cosine": lambda lib: {"distance": lib.distances.CosineSimilarity()},
    "raw_l2": lambda lib: {"distance": lib.distances.LpDistance(normalize_embeddings=False)},
}


@requires_reference
@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("use_miner", [False, True], ids=["labels", "miner"])
def test_matches_reference(distance, use_miner, any_dtype):
    import pytorch_metric_learning as pml
    import pytorch_metric_learning.distances  # noqa: F401
    import pytorch_metric_learning.losses as pml_losses
    from pytorch_metric_learning.miners import TripletMarginMiner

    import deepmetric
    import deepmetric.distances  # noqa: F401

    dtype = any_dtype
    ref = pml_losses.ProxyNCALoss(7, 6, softmax_scale=3, **DISTANCES[distance](pml))
    ours = ProxyNCALoss(7, 6, softmax_scale=3, **DISTANCES[distance](deepmetric))
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(25, 6, generator=g).to(dtype)
    labels = torch.randint(0, 7, (25,), generator=g)
    args = (TripletMarginMiner(margin=0.1)(emb.float(), labels),) if use_miner else ()
    x_ref, x_ours = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    a, b = ref(x_ref, labels, *args), ours(x_ours, labels, *args)
    a.backward()
    b.backward()
    assert b.dtype == a.dtype == dtype
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(b, a, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.proxies.grad, ref.proxies.grad, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.get_logits(emb), ref.get_logits(emb), rtol=rtol * 10, atol=atol * 10)


@requires_reference
def test_matches_reference_with_weight_regularizer():
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.regularizers as pml_regs

    ref = pml_losses.ProxyNCALoss(5, 4, weight_regularizer=pml_regs.LpRegularizer(), weight_reg_weight=0.5)
    ours = ProxyNCALoss(5, 4, weight_regularizer=LpRegularizer(), weight_reg_weight=0.5)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(2)
    emb, labels = torch.randn(10, 4, generator=g), torch.randint(0, 5, (10,), generator=g)
    torch.testing.assert_close(ours(emb, labels), ref(emb, labels))


@pytest.mark.parametrize("distance_name", ["LpDistance", "CosineSimilarity"])
@pytest.mark.parametrize("softmax_scale", [1, 60])
@pytest.mark.parametrize("use_miner", [False, True])
def test_fused_cross_entropy_path_equals_the_nca_computation(distance_name, softmax_scale, use_miner):
    # collect_stats=True keeps the distance off the fused path, so the same loss runs both ways.
    make_distance = {"LpDistance": lambda **kw: LpDistance(power=2, **kw), "CosineSimilarity": CosineSimilarity}
    torch.manual_seed(11)
    fused = ProxyNCALoss(6, 5, softmax_scale=softmax_scale, distance=make_distance[distance_name]())
    plain = ProxyNCALoss(
        6, 5, softmax_scale=softmax_scale, distance=make_distance[distance_name](collect_stats=True)
    )
    fused, plain = fused.double(), plain.double()
    plain.proxies.data.copy_(fused.proxies.data)
    emb = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (20,))
    tuples = (torch.tensor([0, 3, 3, 7]), torch.tensor([1, 2, 5, 9]), torch.tensor([4, 6, 8, 10])) if use_miner else None
    a, b = fused(emb, labels, tuples), plain(emb, labels, tuples)
    torch.testing.assert_close(a, b)
    for x, y in zip(torch.autograd.grad(a, (emb, fused.proxies)), torch.autograd.grad(b, (emb, plain.proxies))):
        torch.testing.assert_close(x, y)


def test_fused_path_drops_rows_whose_probability_underflows():
    # Row 0 sits on class 1's proxy; with scale 1000 its own class has probability exp(-4000) = 0.
    loss = ProxyNCALoss(2, 2, softmax_scale=1000, reducer=DoNothingReducer()).double()
    loss.proxies.data.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))
    emb = torch.tensor([[-1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)
    out = loss(emb, torch.tensor([0, 0]))["loss"]
    assert out["indices"].tolist() == [1]
    assert torch.isfinite(out["losses"]).all()
    everything_dropped = loss(emb[:1], torch.tensor([0]))["loss"]
    assert everything_dropped["losses"] == 0
