"""LiftedStructureLoss and GeneralizedLiftedStructureLoss: hand-computed values, label masks vs
pair lists, miner tuples, reference sets, dtypes, edge cases and the reference library as an oracle."""

import math

import pytest
import torch
from _pair_loss_helpers import (
    assert_attached_zero,
    assert_matches_reference,
    assert_matches_reference_in_mode,
    assert_matches_reference_with_mined_pairs_and_no_labels,
    random_batch,
)

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import GeneralizedLiftedStructureLoss, LiftedStructureLoss
from deepmetric.reducers import DoNothingReducer
from deepmetric.utils import loss_and_miner_utils as lmu

X = [0.0, 0.3, 1.0, 1.2]  # 1-D points, raw L2: d = |x_i - x_j|
LABELS = [0, 0, 1, 1]
RAW_L2 = dict(distance=LpDistance(normalize_embeddings=False))


def line(dtype=torch.float64):
    return torch.tensor(X, dtype=dtype).unsqueeze(1).requires_grad_(True), torch.tensor(LABELS)


def d(i, j):
    return abs(X[i] - X[j])


def lse(values):
    return math.log(sum(math.exp(v) for v in values)) if values else 0.0


def negatives_of(i):
    return [k for k in range(4) if LABELS[k] != LABELS[i]]


def lifted_term(i, j, neg_margin=1.0, pos_margin=0.0):
    negs = [neg_margin - d(a, n) for a in (i, j) for n in negatives_of(a)]
    return max(lse(negs) + d(i, j) - pos_margin, 0) ** 2 / 2


def generalized_term(i, neg_margin=1.0, pos_margin=0.0):
    pos = [d(i, j) - pos_margin for j in range(4) if j != i and LABELS[j] == LABELS[i]]
    neg = [neg_margin - d(i, k) for k in negatives_of(i)]
    return max(lse(pos) + lse(neg), 0)


# ------------------------------------------------------------------------ LiftedStructureLoss


def test_lifted_hand_computed_per_positive_pair(dtype):
    emb, labels = line(dtype)
    out = LiftedStructureLoss(neg_margin=1.0, pos_margin=0.1, reducer=DoNothingReducer(), **RAW_L2)(emb, labels)
    entry = out["loss"]
    assert entry["reduction_type"] == "pos_pair"
    a1, p = entry["indices"]
    assert list(zip(a1.tolist(), p.tolist())) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    expected = [lifted_term(i, j, 1.0, 0.1) for i, j in [(0, 1), (1, 0), (2, 3), (3, 2)]]
    torch.testing.assert_close(entry["losses"], torch.tensor(expected, dtype=dtype))


def test_lifted_default_is_the_mean_over_positive_pairs(dtype):
    emb, labels = line(dtype)
    expected = sum(lifted_term(i, j) for i, j in [(0, 1), (1, 0), (2, 3), (3, 2)]) / 4
    assert LiftedStructureLoss(**RAW_L2)(emb, labels).item() == pytest.approx(expected, rel=1e-6)


def test_lifted_miner_pairs_use_only_their_own_negatives_with_repeats():
    emb, _ = line()
    # positive (0, 1); negative pairs (0, 2) twice and (1, 3); (2, 0) is not anchored at 0 or 1
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 0, 1, 2]), torch.tensor([2, 2, 3, 0]))
    out = LiftedStructureLoss(reducer=DoNothingReducer(), **RAW_L2)(emb, indices_tuple=pairs)
    expected = max(lse([1 - d(0, 2), 1 - d(0, 2), 1 - d(1, 3)]) + d(0, 1), 0) ** 2 / 2
    assert out["loss"]["losses"].item() == pytest.approx(expected, rel=1e-9)


def test_lifted_pair_without_negatives_keeps_only_its_positive_term():
    emb, _ = line()
    pairs = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0]), torch.tensor([2]))
    out = LiftedStructureLoss(reducer=DoNothingReducer(), **RAW_L2)(emb, indices_tuple=pairs)
    assert out["loss"]["losses"][1].item() == pytest.approx(d(2, 3) ** 2 / 2, rel=1e-9)


def test_lifted_with_similarity_flips_the_margins():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    out = LiftedStructureLoss(neg_margin=0.2, pos_margin=0.9, distance=CosineSimilarity(),
                              reducer=DoNothingReducer())(emb, labels)
    c = 1 / math.sqrt(2)
    # pair (0, 1): negatives (0, 2) s=0 and (1, 2) s=c -> lse(s - 0.2) + (0.9 - c)
    expected = max(math.log(math.exp(-0.2) + math.exp(c - 0.2)) + 0.9 - c, 0) ** 2 / 2
    torch.testing.assert_close(out["loss"]["losses"], torch.tensor([expected, expected], dtype=torch.float64))


def test_lifted_label_masks_equal_the_listed_pairs(dtype):
    emb, labels, call = random_batch(30, 6, 4, dtype, seed=4, ref_size=40)
    loss = LiftedStructureLoss(neg_margin=1.2)
    dense = loss(emb, labels, **call)
    g_dense = torch.autograd.grad(dense, [emb, call["ref_emb"]])
    listed = loss(emb, labels, lmu.get_all_pairs_indices(labels, call["ref_labels"]), **call)
    g_listed = torch.autograd.grad(listed, [emb, call["ref_emb"]])
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    for a, b in zip(g_dense, g_listed):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


def test_lifted_gradcheck():
    emb, labels, _ = random_batch(6, 3, 2, torch.float64, seed=1)
    loss = LiftedStructureLoss(neg_margin=1.5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


# ------------------------------------------------------------- GeneralizedLiftedStructureLoss


def test_generalized_hand_computed_per_anchor(dtype):
    emb, labels = line(dtype)
    loss = GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.1, reducer=DoNothingReducer(), **RAW_L2)
    entry = loss(emb, labels)["loss"]
    assert entry["reduction_type"] == "element" and entry["indices"].tolist() == [0, 1, 2, 3]
    expected = [generalized_term(i, 1.0, 0.1) for i in range(4)]
    torch.testing.assert_close(entry["losses"], torch.tensor(expected, dtype=dtype))


def test_generalized_anchor_without_positives_keeps_its_negative_term():
    emb = torch.tensor([[0.0], [0.3], [0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    entry = GeneralizedLiftedStructureLoss(reducer=DoNothingReducer(), **RAW_L2)(emb, labels)["loss"]
    # anchor 2: no positives -> only log(e^(1 - .5) + e^(1 - .2))
    assert entry["losses"][2].item() == pytest.approx(math.log(math.exp(0.5) + math.exp(0.8)), rel=1e-9)


def test_generalized_gradcheck():
    emb, labels, _ = random_batch(6, 3, 2, torch.float64, seed=1)
    loss = GeneralizedLiftedStructureLoss(neg_margin=1.5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


# ------------------------------------------------------------------------------ both losses

BOTH = [LiftedStructureLoss, GeneralizedLiftedStructureLoss]


@pytest.mark.parametrize("cls", BOTH, ids=lambda c: c.__name__)
def test_records_margins(cls):
    loss = cls(neg_margin=0.7, pos_margin=0.1)
    assert {"pos_margin", "neg_margin"} <= set(loss._record_these)
    assert isinstance(loss.distance, LpDistance)


@pytest.mark.parametrize("cls", BOTH, ids=lambda c: c.__name__)
def test_float16_returns_float16_close_to_float64(cls):
    emb, labels, _ = random_batch(16, 8, 3, torch.float64, seed=3)
    full = cls()(emb, labels)
    half = cls()(emb.detach().half().requires_grad_(True), labels)
    assert half.dtype == torch.float16
    assert half.item() == pytest.approx(full.item(), rel=1e-2, abs=1e-2)


@pytest.mark.parametrize("cls", BOTH, ids=lambda c: c.__name__)
@pytest.mark.parametrize("labels", [[0], [0, 0, 0], [0, 1, 2]], ids=["one", "single-class", "distinct"])
def test_degenerate_batches(cls, labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    value = cls()(emb, torch.tensor(labels))
    if cls is LiftedStructureLoss or len(labels) == 1:
        assert_attached_zero(value, emb)
        return
    # the generalized form keeps one-sided anchors: finite, with a finite gradient
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("cls", BOTH, ids=lambda c: c.__name__)
def test_rejects_missing_labels_and_tuple(cls):
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        cls()(torch.randn(4, 3))


@requires_reference
@pytest.mark.parametrize("name", ["LiftedStructureLoss", "GeneralizedLiftedStructureLoss"])
@pytest.mark.parametrize("kwargs", [
    {}, {"neg_margin": 0.5, "pos_margin": 0.2},
    {"distance": ("LpDistance", {"power": 2})}, {"distance": ("CosineSimilarity", {}), "neg_margin": 0.1,
                                                 "pos_margin": 0.8},
    {"distance": ("SNRDistance", {})},
])
@pytest.mark.parametrize("mode", ["labels", "pairs", "triplets", "ref", "ref+pairs", "big-ref"])
def test_matches_reference(name, kwargs, mode, dtype):
    assert_matches_reference_in_mode(name, mode, dtype, seed=15, ref_sizes={"big-ref": 60}, **kwargs)


@requires_reference
@pytest.mark.parametrize("name", ["LiftedStructureLoss", "GeneralizedLiftedStructureLoss"])
def test_matches_reference_with_a_miner_and_no_labels(name, dtype):
    assert_matches_reference_with_mined_pairs_and_no_labels(name, dtype)


@requires_reference
@pytest.mark.parametrize("name", ["LiftedStructureLoss", "GeneralizedLiftedStructureLoss"])
def test_matches_reference_in_float16(name):
    emb, labels, _ = random_batch(24, 8, 4, torch.float16, seed=2)
    assert_matches_reference(name, emb, labels, scale=1)


@pytest.mark.parametrize("listed", [False, True], ids=["labels", "pair-list"])
def test_lifted_large_batch_needs_no_pairs_by_pairs_matrix(listed):
    # 1024 samples, 4 per class: a (positive pairs x negative pairs) matrix would need ~12 GB.
    emb, labels, _ = random_batch(1024, 8, 256, torch.float32, seed=0)
    tuples = lmu.get_all_pairs_indices(labels) if listed else None
    value = LiftedStructureLoss()(emb, labels, tuples)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()
