"""MultipleLosses: weighted sums, per-loss miners, list and dict forms, bad arguments and the
reference library as an oracle."""

import pytest
import torch

from conftest import requires_reference
from deepmetric.distances import LpDistance
from deepmetric.losses import ContrastiveLoss, MultipleLosses, TripletMarginLoss
from deepmetric.miners import BatchHardMiner, MultiSimilarityMiner, TripletMarginMiner
from deepmetric.utils.errors import ArgumentError

RAW_L2 = dict(distance=LpDistance(normalize_embeddings=False))


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 5, generator=g, dtype=torch.float64), torch.arange(12) % 3


def test_unweighted_sum_of_the_losses():
    emb, labels = data()
    a, b = ContrastiveLoss(), TripletMarginLoss(margin=0.3)
    out = MultipleLosses([a, b])(emb, labels)
    torch.testing.assert_close(out, a(emb, labels) + b(emb, labels))


def test_hand_computed_weighted_sum():
    emb = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    # Contrastive (raw L2, neg_margin 4): pos d = 1 (twice) -> 1; neg [4-3]+ = 1, [4-2]+ = 2 -> 1.5
    # Triplet (margin 1): anchor 0: [1 - 3 + 1]+ = 0; anchor 1: [1 - 2 + 1]+ = 0 -> 0
    out = MultipleLosses(
        [ContrastiveLoss(neg_margin=4, **RAW_L2), TripletMarginLoss(margin=1, **RAW_L2)], weights=[2, 5]
    )(emb, labels)
    assert out.item() == pytest.approx(2 * 2.5 + 5 * 0)


def test_dict_form_with_weights_and_a_subset_of_miners():
    emb, labels = data()
    a, b = ContrastiveLoss(), TripletMarginLoss(margin=0.3)
    miner = TripletMarginMiner(margin=0.2)
    loss = MultipleLosses({"c": a, "t": b}, miners={"t": miner}, weights={"t": 0.5, "c": 3})
    assert loss.is_dict and isinstance(loss.losses, torch.nn.ModuleDict)
    expected = 3 * a(emb, labels) + 0.5 * b(emb, labels, miner(emb, labels))
    torch.testing.assert_close(loss(emb, labels), expected)


def test_list_miners_may_contain_none():
    emb, labels = data()
    a, b = ContrastiveLoss(), TripletMarginLoss(margin=0.3)
    miner = BatchHardMiner()
    out = MultipleLosses([a, b], miners=[None, miner])(emb, labels)
    torch.testing.assert_close(out, a(emb, labels) + b(emb, labels, miner(emb, labels)))


def test_passed_indices_tuple_goes_to_every_loss_without_miners():
    emb, labels = data()
    a, b = ContrastiveLoss(), TripletMarginLoss(margin=0.3)
    it = MultiSimilarityMiner()(emb, labels)
    out = MultipleLosses([a, b])(emb, labels, it)
    torch.testing.assert_close(out, a(emb, labels, it) + b(emb, labels, it))


def test_gradients_flow_through_every_loss():
    emb, labels = data()
    emb.requires_grad_(True)
    a, b = ContrastiveLoss(), TripletMarginLoss(margin=0.3)
    (g,) = torch.autograd.grad(MultipleLosses([a, b], weights=[2, 3])(emb, labels), emb)
    (ga,) = torch.autograd.grad(a(emb, labels), emb)
    (gb,) = torch.autograd.grad(b(emb, labels), emb)
    torch.testing.assert_close(g, 2 * ga + 3 * gb)


def test_default_weights_and_submodules():
    loss = MultipleLosses((ContrastiveLoss(), TripletMarginLoss()))
    assert loss.weights == [1, 1] and loss.miners is None and not loss.is_dict
    assert isinstance(loss.losses, torch.nn.ModuleList) and len(list(loss.children())) == 1
    assert MultipleLosses({"x": ContrastiveLoss()}).weights == {"x": 1}


def test_indices_tuple_with_miners_is_rejected():
    emb, labels = data()
    loss = MultipleLosses([ContrastiveLoss()], miners=[BatchHardMiner()])
    with pytest.raises(ArgumentError, match="miners"):
        loss(emb, labels, BatchHardMiner()(emb, labels))
    with pytest.raises(AssertionError):  # the reference raises AssertionError: keep it catchable
        loss(emb, labels, BatchHardMiner()(emb, labels))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[1]), r"weights must have one entry per loss \(2\), got 1"),
        (dict(miners=[None]), r"miners must have one entry per loss \(2\), got 1"),
        (dict(weights={"a": 1, "b": 1}), "weights must be a list or tuple"),
    ],
)
def test_bad_list_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultipleLosses([ContrastiveLoss(), TripletMarginLoss()], **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights={"a": 1}), r"weights must have exactly the loss keys \['a', 'b'\], got \['a'\]"),
        (dict(weights={"a": 1, "b": 2, "c": 3}), "exactly the loss keys"),
        (dict(miners={"z": BatchHardMiner()}), r"unknown keys \['z'\]"),
        (dict(miners=[None, None]), "miners must be a dict"),
    ],
)
def test_bad_dict_arguments(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        MultipleLosses({"a": ContrastiveLoss(), "b": TripletMarginLoss()}, **kwargs)


def test_losses_must_be_a_container():
    with pytest.raises(TypeError, match="list, tuple or dict"):
        MultipleLosses(ContrastiveLoss())


@requires_reference
@pytest.mark.parametrize("form", ["list", "dict"])
def test_matches_reference(form, dtype):
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.miners as pml_miners

    from deepmetric import losses, miners

    def build(L, M):
        items = {"c": L.ContrastiveLoss(), "t": L.TripletMarginLoss(margin=0.2), "ms": L.MultiSimilarityLoss()}
        mins = {"t": M.TripletMarginMiner(margin=0.1), "ms": M.MultiSimilarityMiner()}
        weights = {"c": 0.5, "t": 2.0, "ms": 1.5}
        if form == "dict":
            return L.MultipleLosses(items, miners=mins, weights=weights)
        keys = list(items)
        return L.MultipleLosses(
            [items[k] for k in keys], miners=[mins.get(k) for k in keys], weights=[weights[k] for k in keys]
        )

    ours, ref = build(losses, miners), build(pml_losses, pml_miners)
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(20, 6, generator=g).to(dtype)
    labels = torch.randint(0, 4, (20,), generator=g)
    x1, x2 = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    a, b = ours(x1, labels), ref(x2, labels)
    (g1,), (g2,) = torch.autograd.grad(a, x1), torch.autograd.grad(b, x2)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(g1, g2)
