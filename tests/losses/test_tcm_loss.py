"""ThresholdConsistentMarginLoss: hand-computed values, pair tuples, the reference-set quirk,
dtypes, gradients, edge cases and the reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import DotProductSimilarity, LpDistance
from deepmetric.losses import ThresholdConsistentMarginLoss
from deepmetric.miners import MultiSimilarityMiner, TripletMarginMiner
from deepmetric.reducers import DoNothingReducer
from deepmetric.utils import loss_and_miner_utils as lmu

C60, S60, R2 = 0.5, math.sqrt(3) / 2, 1 / math.sqrt(2)
# Unit vectors at 0, 60, 90 and 45 degrees.
POINTS = [[1.0, 0.0], [C60, S60], [0.0, 1.0], [R2, R2]]
LABELS = [0, 0, 1, 1]
S01, S23 = C60, R2  # positive similarities
NEG_SIMS = [0.0, R2, C60 * R2 + S60 * R2, S60]  # s02, s03, s13 (cos 15), s12


def points(dtype=torch.float64):
    return torch.tensor(POINTS, dtype=dtype, requires_grad=True), torch.tensor(LABELS)


def expected(lp=1.0, lm=1.0, mp=0.9, mm=0.5):
    pos = [mp - s for s in (S01, S23) if s <= mp]
    neg = [s - mm for s in NEG_SIMS if s >= mm]
    pos_term = sum(pos) / len(pos) if pos else 0.0
    neg_term = sum(neg) / len(neg) if neg else 0.0
    return lp * pos_term + lm * neg_term


@pytest.mark.parametrize("kwargs", [
    {}, {"lambda_plus": 2.0, "lambda_minus": 0.5}, {"margin_plus": 0.6, "margin_minus": 0.8},
])
def test_hand_computed(kwargs, dtype):
    emb, labels = points(dtype)
    out = ThresholdConsistentMarginLoss(**kwargs)(emb, labels)
    names = {"lambda_plus": "lp", "lambda_minus": "lm", "margin_plus": "mp", "margin_minus": "mm"}
    value = expected(**{names[k]: v for k, v in kwargs.items()})
    assert out.dtype == dtype
    assert out.item() == pytest.approx(value, rel=1e-6)


def test_loss_dict_is_already_reduced():
    emb, labels = points()
    entry = ThresholdConsistentMarginLoss(reducer=DoNothingReducer())(emb, labels)["loss"]
    assert entry["reduction_type"] == "already_reduced" and entry["indices"] is None
    assert entry["losses"].ndim == 0


def test_only_negative_side_counts_when_positives_are_tight():
    emb, labels = points()
    # margin_plus .4 < both positive similarities: the positive term is 0.
    out = ThresholdConsistentMarginLoss(margin_plus=0.4)(emb, labels)
    assert out.item() == pytest.approx(expected(mp=0.4), rel=1e-9)
    assert expected(mp=0.4) == pytest.approx(expected() - (0.4 + (0.9 - R2)) / 2)


def test_nothing_inside_the_margins_gives_attached_zero():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0]], requires_grad=True)
    out = ThresholdConsistentMarginLoss()(emb, torch.tensor([0, 0, 1]))
    assert out.item() == 0 and out.requires_grad
    out.backward()
    assert torch.all(emb.grad == 0)


@pytest.mark.parametrize("labels", [[0], [3, 3, 3], [0, 1, 2]], ids=["one", "single_class", "distinct"])
def test_edge_batches_are_finite(labels):
    torch.manual_seed(0)
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = ThresholdConsistentMarginLoss()(emb, torch.tensor(labels))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_zero_embedding_row_has_zero_similarity_not_nan():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    out = ThresholdConsistentMarginLoss()(emb, torch.tensor([0, 0, 1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_triplet_and_pair_tuples_are_equivalent():
    torch.manual_seed(1)
    emb = torch.randn(12, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,))
    a, p, n = lmu.get_all_triplets_indices(labels)
    loss = ThresholdConsistentMarginLoss()
    as_triplets = loss(emb, indices_tuple=(a, p, n))
    as_pairs = loss(emb, indices_tuple=(a, p, a, n))
    torch.testing.assert_close(as_triplets, as_pairs)


def test_all_pairs_tuple_equals_label_path(dtype):
    torch.manual_seed(2)
    emb = torch.randn(20, 6, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    loss = ThresholdConsistentMarginLoss(margin_plus=0.3, margin_minus=-0.1)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, indices_tuple=lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 10, atol=atol * 10)


def test_reference_set_only_changes_the_pairs():
    # Reference quirk: pair members are rows of embeddings; ref_labels only pick the pairs.
    emb, labels = points()
    ref = torch.randn(4, 2, dtype=torch.float64)
    loss = ThresholdConsistentMarginLoss()
    with_ref = loss(emb, labels, ref_emb=ref, ref_labels=labels.clone())
    # Not the same set: (i, i) pairs become positives, with similarity 1 > margin_plus.
    assert with_ref.item() == pytest.approx(expected(), rel=1e-9)


def test_reference_set_larger_than_batch_is_rejected():
    emb, labels = points()
    with pytest.raises(ValueError, match="batch size 4; got a reference index up to 5"):
        ThresholdConsistentMarginLoss()(emb, labels, ref_emb=torch.randn(6, 2), ref_labels=torch.arange(6))


def test_float16_close_to_float32():
    torch.manual_seed(3)
    emb = torch.randn(16, 8)
    labels = torch.randint(0, 3, (16,))
    loss = ThresholdConsistentMarginLoss(margin_plus=0.5, margin_minus=0.0)
    half = loss(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), loss(emb, labels), rtol=1e-2, atol=1e-2)


def test_gradcheck():
    torch.manual_seed(4)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = ThresholdConsistentMarginLoss(margin_plus=0.95, margin_minus=-0.5, lambda_minus=0.7)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="CosineSimilarity"):
        ThresholdConsistentMarginLoss(distance=LpDistance())
    with pytest.raises(AssertionError):
        ThresholdConsistentMarginLoss(distance=DotProductSimilarity())
    emb, _ = points()
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        ThresholdConsistentMarginLoss()(emb)
    assert not hasattr(ThresholdConsistentMarginLoss(), "_record_these")


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {}, {"lambda_plus": 0.5, "lambda_minus": 2.0, "margin_plus": 0.2, "margin_minus": 0.1},
])
@pytest.mark.parametrize("mode", ["labels", "pair_miner", "triplet_miner", "ref"])
def test_matches_reference(kwargs, mode, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(5)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 5, (40,))
    call = {}
    if mode == "pair_miner":
        call["indices_tuple"] = MultiSimilarityMiner(epsilon=0.3)(emb, labels)
    elif mode == "triplet_miner":
        call["indices_tuple"] = TripletMarginMiner(margin=0.3)(emb, labels)
    elif mode == "ref":
        call = {"ref_emb": torch.randn(30, 8, dtype=dtype), "ref_labels": torch.randint(0, 5, (30,))}
    ours = ThresholdConsistentMarginLoss(**kwargs)(emb, labels, **call)
    (g_ours,) = torch.autograd.grad(ours, emb)
    theirs = ref_losses.ThresholdConsistentMarginLoss(**kwargs)(emb, labels, **call)
    (g_theirs,) = torch.autograd.grad(theirs, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_ours, g_theirs, rtol=rtol * 10, atol=atol * 10)
