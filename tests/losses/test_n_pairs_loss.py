"""NPairsLoss: pair selection, hand-computed values, miner tuples, dtypes, edge cases, rejected
inputs and the reference library as an oracle."""

import math

import pytest
import torch
from _pair_loss_helpers import assert_attached_zero, assert_matches_reference, random_batch, random_pairs

from conftest import requires_reference
from deepmetric.distances import LpDistance
from deepmetric.losses import NPairsLoss
from deepmetric.reducers import DoNothingReducer
from deepmetric.utils import loss_and_miner_utils as lmu


@pytest.mark.parametrize("seed", range(5))
def test_one_pair_per_label_equals_the_first_listed_pair(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-3, 9, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g)
    a, p = NPairsLoss._first_pair_per_label(labels)
    a_ref, p_ref = lmu.convert_to_pos_pairs_with_unique_labels(None, labels)
    assert a.tolist() == a_ref.tolist() and p.tolist() == p_ref.tolist()


def test_pairs_follow_label_order_not_batch_order():
    a, p = NPairsLoss._first_pair_per_label(torch.tensor([5, 2, 5, 7, 2, 5]))
    assert a.tolist() == [1, 0] and p.tolist() == [4, 2]  # label 2 first, label 7 has no pair


def test_hand_computed_cross_entropy(dtype):
    # anchors 0 (label 0) and 2 (label 1); positives 1 and 3; cosine similarities
    angles = [0.0, 0.3, 1.2, 1.6]
    emb = torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = NPairsLoss(reducer=DoNothingReducer())
    out = loss(emb, labels)["loss"]
    assert out["reduction_type"] == "element" and out["indices"].tolist() == [0, 2]

    def s(i, j):
        return math.cos(angles[i] - angles[j])

    expected = [
        -s(0, 1) + math.log(math.exp(s(0, 1)) + math.exp(s(0, 3))),
        -s(2, 3) + math.log(math.exp(s(2, 1)) + math.exp(s(2, 3))),
    ]
    torch.testing.assert_close(out["losses"], torch.tensor(expected, dtype=dtype))
    assert loss.num_pairs == 2


def test_a_distance_is_negated():
    emb = torch.tensor([[0.0], [0.1], [1.0], [1.3]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    value = NPairsLoss(distance=LpDistance(normalize_embeddings=False))(emb, labels)
    # logits -d: anchor 0 vs positives 1, 3: d = .1, 1.3; anchor 2: d = .9, .3
    expected = (math.log1p(math.exp(-1.3 + 0.1)) + math.log1p(math.exp(-0.9 + 0.3))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-9)


def test_records_num_pairs_as_a_statistic():
    loss = NPairsLoss(collect_stats=True)
    assert "num_pairs" in loss._record_these_stats
    loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 3]))
    assert loss.num_pairs == 2


def test_float16_returns_float16_close_to_float64():
    emb, labels, _ = random_batch(16, 8, 3, torch.float64, seed=3)
    full = NPairsLoss()(emb, labels)
    half = NPairsLoss()(emb.detach().half().requires_grad_(True), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(full.item(), rel=1e-2, abs=1e-2)


def test_gradcheck():
    emb, labels, _ = random_batch(8, 3, 3, torch.float64, seed=1)
    loss = NPairsLoss()
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


@pytest.mark.parametrize("labels", [[0], [0, 1, 2]], ids=["one", "distinct"])
def test_no_positive_pair_is_an_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    loss = NPairsLoss()
    assert_attached_zero(loss(emb, torch.tensor(labels)), emb)
    assert loss.num_pairs == 0


def test_single_class_gives_one_pair_and_zero_loss():
    emb = torch.randn(5, 4, requires_grad=True)
    value = NPairsLoss()(emb, torch.zeros(5, dtype=torch.long))
    assert value.item() == 0  # a softmax over one logit
    value.backward()
    assert torch.isfinite(emb.grad).all()


def test_requires_labels():
    with pytest.raises(ValueError, match="labels are required"):
        NPairsLoss()(torch.randn(4, 3), indices_tuple=random_pairs(torch.tensor([0, 0, 1, 1])))


def test_rejects_a_reference_set():
    with pytest.raises(ValueError, match="not supported"):
        labels = torch.tensor([0, 0, 1, 1])
        NPairsLoss()(torch.randn(4, 3), labels, ref_emb=torch.randn(4, 3), ref_labels=labels)


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {}, {"distance": ("DotProductSimilarity", {"normalize_embeddings": False})},
    {"distance": ("LpDistance", {})},
])
@pytest.mark.parametrize("mode", ["labels", "pairs"])
def test_matches_reference(kwargs, mode, dtype):
    emb, labels, _ = random_batch(40, 8, 7, dtype, seed=16)
    tuples = random_pairs(labels, repeat=True) if mode == "pairs" else None
    assert_matches_reference("NPairsLoss", emb, labels, None, tuples, **kwargs)


@requires_reference
def test_matches_reference_in_float16():
    emb, labels, _ = random_batch(24, 8, 4, torch.float16, seed=2)
    assert_matches_reference("NPairsLoss", emb, labels, scale=1)
