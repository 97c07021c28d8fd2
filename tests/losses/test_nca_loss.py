"""NCALoss: hand-computed values, miner weights, reference sets, dtypes, gradients, edge cases
and the reference library as an oracle."""

import math

import pytest
import torch
from _ranking_helpers import assert_same_as_reference, grad_of

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import NCALoss
from deepmetric.miners import MultiSimilarityMiner
from deepmetric.reducers import DoNothingReducer, SumReducer

# Points on a line with raw squared L2: d01 = 1, d02 = 9, d12 = 4.
RAW_SQ_L2 = dict(distance=LpDistance(normalize_embeddings=False, power=2))


def line_points(dtype=torch.float64):
    return torch.tensor([[0.0], [1.0], [3.0]], dtype=dtype, requires_grad=True), torch.tensor([0, 0, 1])


def test_hand_computed_value(dtype):
    emb, labels = line_points(dtype)
    out = NCALoss(**RAW_SQ_L2)(emb, labels)
    # row 0: -log(e^-1 / (e^-1 + e^-9)); row 1: -log(e^-1 / (e^-1 + e^-4)); row 2 has no positive
    expected = (math.log1p(math.exp(-8)) + math.log1p(math.exp(-3))) / 2
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_loss_dict_keeps_only_rows_with_a_positive():
    emb, labels = line_points()
    out = NCALoss(reducer=DoNothingReducer(), **RAW_SQ_L2)(emb, labels)["loss"]
    assert out["reduction_type"] == "element"
    assert out["indices"].tolist() == [0, 1]
    torch.testing.assert_close(
        out["losses"], torch.tensor([math.log1p(math.exp(-8)), math.log1p(math.exp(-3))], dtype=torch.float64)
    )


def test_softmax_scale_sharpens_the_softmax():
    emb, labels = line_points()
    out = NCALoss(softmax_scale=2, **RAW_SQ_L2)(emb, labels)
    expected = (math.log1p(math.exp(-16)) + math.log1p(math.exp(-6))) / 2
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_similarity_is_used_without_negation():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    out = NCALoss(distance=CosineSimilarity(), reducer=DoNothingReducer())(emb, labels)["loss"]
    c = 1 / math.sqrt(2)
    # row 0: e^c / (e^c + e^0); row 1: e^c / (e^c + e^c)
    expected = [-math.log(math.exp(c) / (math.exp(c) + 1)), math.log(2)]
    torch.testing.assert_close(out["losses"], torch.tensor(expected, dtype=torch.float64))


def test_miner_weights_scale_each_row():
    emb, labels = line_points()
    pairs = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([], dtype=torch.long),
             torch.tensor([], dtype=torch.long))
    out = NCALoss(reducer=DoNothingReducer(), **RAW_SQ_L2)(emb, labels, pairs)["loss"]
    # counts: index 0 twice, index 1 twice -> both weight 1, index 2 never -> row 2 dropped anyway
    torch.testing.assert_close(
        out["losses"], torch.tensor([math.log1p(math.exp(-8)), math.log1p(math.exp(-3))], dtype=torch.float64)
    )
    triplets = (torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([2, 2]))
    out = NCALoss(reducer=DoNothingReducer(), **RAW_SQ_L2)(emb, labels, triplets)["loss"]
    # counts: 0 -> 3, 1 -> 1, 2 -> 2: weights 1, 1/3
    torch.testing.assert_close(
        out["losses"],
        torch.tensor([math.log1p(math.exp(-8)), math.log1p(math.exp(-3)) / 3], dtype=torch.float64),
    )


def test_reference_set_keeps_every_reference_row():
    emb = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    ref = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    out = NCALoss(reducer=DoNothingReducer(), **RAW_SQ_L2)(
        emb, torch.tensor([0, 1]), ref_emb=ref, ref_labels=torch.tensor([0, 1])
    )["loss"]
    # query 0 vs refs at 0 (pos, d=0) and 3 (d=9); query 1 vs 0 (d=1) and 3 (pos, d=4)
    expected = [math.log1p(math.exp(-9)), -math.log(math.exp(-4) / (math.exp(-1) + math.exp(-4)))]
    torch.testing.assert_close(out["losses"], torch.tensor(expected, dtype=torch.float64))


def test_large_scale_does_not_underflow_or_drop_finite_rows():
    emb = torch.tensor([[0.0], [0.5], [0.1]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    out = NCALoss(softmax_scale=200, reducer=DoNothingReducer(), **RAW_SQ_L2)(emb, labels)["loss"]
    # row 0: logits -50 (pos) and -2 (neg): loss = 48 + log(1 + e^-48)
    assert out["losses"][0].item() == pytest.approx(48 + math.log1p(math.exp(-48)), rel=1e-12)
    assert torch.isfinite(out["losses"]).all()


def test_float16_matches_float32():
    torch.manual_seed(0)
    emb = torch.randn(16, 8)
    labels = torch.randint(0, 3, (16,))
    full = NCALoss()(emb, labels)
    half = NCALoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_gradcheck():
    torch.manual_seed(1)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda x: NCALoss(softmax_scale=3)(x, labels), (emb,))


def test_batch_of_one_is_an_attached_zero():
    emb = torch.randn(1, 4, requires_grad=True)
    out = NCALoss()(emb, torch.tensor([0]))
    assert out.item() == 0 and out.requires_grad
    assert torch.all(grad_of(out, emb) == 0)


def test_no_positive_anywhere_gives_zero_not_nan():
    emb = torch.randn(4, 4, requires_grad=True)
    out = NCALoss()(emb, torch.tensor([0, 1, 2, 3]))
    assert out.item() == 0
    assert torch.all(grad_of(out, emb) == 0)


def test_single_class_gives_zero_loss_per_row():
    emb = torch.randn(5, 4, requires_grad=True)
    out = NCALoss(reducer=DoNothingReducer())(emb, torch.zeros(5, dtype=torch.long))["loss"]
    torch.testing.assert_close(out["losses"], torch.zeros(5))


def test_records_softmax_scale():
    assert "softmax_scale" in NCALoss(softmax_scale=4)._record_these


def test_labels_are_required():
    with pytest.raises(ValueError, match="labels"):
        NCALoss()(torch.randn(4, 3))


def test_ref_emb_without_ref_labels_is_rejected():
    with pytest.raises(ValueError, match="ref_labels"):
        NCALoss()(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), ref_emb=torch.randn(3, 3))


def test_float_labels_are_compared_by_value():
    emb = torch.randn(4, 3)
    as_float = NCALoss()(emb, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(as_float, NCALoss()(emb, torch.tensor([0, 0, 1, 1])))


def test_non_finite_embeddings_are_rejected():
    emb = torch.randn(4, 3)
    emb[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        NCALoss()(emb, torch.tensor([0, 0, 1, 1]))


# ---------------------------------------------------------------- oracle


@requires_reference
@pytest.mark.parametrize("kwargs", [{}, {"softmax_scale": 5}, {"distance": "cosine"}])
@pytest.mark.parametrize("mode", ["labels", "miner", "ref"])
def test_matches_reference(kwargs, mode, dtype):
    import pytorch_metric_learning.distances as ref_distances
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(3)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 5, (40,))
    ours_kwargs, theirs_kwargs = dict(kwargs), dict(kwargs)
    if kwargs.get("distance") == "cosine":
        ours_kwargs["distance"], theirs_kwargs["distance"] = CosineSimilarity(), ref_distances.CosineSimilarity()
    call = {}
    if mode == "miner":
        call["indices_tuple"] = MultiSimilarityMiner(epsilon=0.2)(emb, labels)
    elif mode == "ref":
        call = {"ref_emb": torch.randn(30, 8, dtype=dtype, requires_grad=True),
                "ref_labels": torch.randint(0, 5, (30,))}
    assert_same_as_reference(NCALoss(**ours_kwargs), ref_losses.NCALoss(**theirs_kwargs), (emb, labels),
                             dtype, **call)


@requires_reference
def test_matches_reference_in_float16():
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(4)
    emb = torch.randn(32, 8).half()
    labels = torch.randint(0, 4, (32,))
    ours = NCALoss()(emb, labels)
    theirs = ref_losses.NCALoss()(emb, labels)
    rtol, atol = tolerance(torch.float16)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)


@requires_reference
def test_matches_reference_with_sum_reducer_and_some_rows_without_positives():
    import pytorch_metric_learning.losses as ref_losses
    import pytorch_metric_learning.reducers as ref_reducers

    torch.manual_seed(5)
    emb = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5, 6])
    assert_same_as_reference(NCALoss(reducer=SumReducer()), ref_losses.NCALoss(reducer=ref_reducers.SumReducer()),
                             (emb, labels), torch.float64)
