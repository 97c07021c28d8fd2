"""IntraPairVarianceLoss: hand-computed values, similarity vs distance orientation, dense vs
per-pair paths, miner pairs, reference sets, dtypes, gradients and the reference library."""

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import IntraPairVarianceLoss
from deepmetric.reducers import (
    AvgNonZeroReducer,
    DoNothingReducer,
    MeanReducer,
    PerAnchorReducer,
    SumReducer,
    ThresholdReducer,
)
from deepmetric.utils import loss_and_miner_utils as lmu

POINTS = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]
LABELS = [0, 0, 0, 1]
POS = [0.6, 0.0, 0.8]  # s01, s02, s12 (each pair counted in both directions)
NEG = [-1.0, -0.6, 0.0]  # s30, s31, s32


def points(dtype=torch.float64):
    return torch.tensor(POINTS, dtype=dtype, requires_grad=True), torch.tensor(LABELS)


def test_hand_computed_with_cosine(dtype):
    emb, labels = points(dtype)
    mu_pos, mu_neg = sum(POS) / 3, sum(NEG) / 3
    pos = [max(0.0, 0.9 * mu_pos - s) ** 2 for s in POS]
    neg = [max(0.0, s - 1.2 * mu_neg) ** 2 for s in NEG]
    out = IntraPairVarianceLoss(pos_eps=0.1, neg_eps=0.2)(emb, labels)
    assert out.item() == pytest.approx(sum(pos) / 3 + sum(neg) / 3, rel=1e-6)


def test_hand_computed_with_a_distance():
    emb = torch.tensor([[0.0], [1.0], [3.0], [10.0], [11.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1])
    loss = IntraPairVarianceLoss(pos_eps=0.1, neg_eps=0.1, reducer=DoNothingReducer(),
                                 distance=LpDistance(normalize_embeddings=False))
    out = loss(emb, labels)
    pos_d = torch.tensor([1.0, 3.0, 1.0, 2.0, 3.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    expected_pos = torch.relu(pos_d - 1.1 * pos_d.mean()) ** 2
    torch.testing.assert_close(out["pos_loss"]["losses"], expected_pos)
    neg_d = torch.tensor([10.0, 11.0, 9.0, 10.0, 7.0, 8.0, 10.0, 9.0, 7.0, 11.0, 10.0, 8.0], dtype=torch.float64)
    torch.testing.assert_close(out["neg_loss"]["losses"], torch.relu(0.9 * neg_d.mean() - neg_d) ** 2)
    assert out["pos_loss"]["reduction_type"] == "pos_pair"
    assert out["neg_loss"]["reduction_type"] == "neg_pair"


def test_records_eps():
    assert {"pos_eps", "neg_eps"} <= set(IntraPairVarianceLoss()._record_these)


def test_default_distance_is_cosine():
    assert isinstance(IntraPairVarianceLoss().distance, CosineSimilarity)


REDUCERS = [None, AvgNonZeroReducer(), SumReducer(), ThresholdReducer(low=0.001),
            ThresholdReducer(low=0.001, high=0.05), MeanReducer(), PerAnchorReducer()]


@pytest.mark.parametrize("reducer", REDUCERS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance()], ids=lambda d: type(d).__name__)
def test_dense_path_equals_pair_list_path(reducer, distance, dtype):
    torch.manual_seed(0)
    emb = torch.randn(20, 5, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    loss = IntraPairVarianceLoss(reducer=reducer, distance=distance)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 10, atol=atol * 10)


def test_one_side_empty_still_counts_the_other():
    emb, _ = points()
    out = IntraPairVarianceLoss(pos_eps=0.1, neg_eps=0.2)(emb, torch.tensor([0, 1, 2, 3]))
    neg_values = [0.6, 0.0, -1.0, 0.8, -0.6, 0.0]  # every pair is negative
    mu = sum(neg_values) / 6
    expected = sum(max(0.0, s - 1.2 * mu) ** 2 for s in neg_values) / 6
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_batch_of_one_gives_attached_zero():
    emb = torch.randn(1, 4, requires_grad=True)
    out = IntraPairVarianceLoss()(emb, torch.tensor([3]))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)


def test_single_pair_of_each_kind_gives_zero():
    # as in every pair loss: when each index list holds at most one pair the loss is zero
    emb, _ = points()
    tup = (torch.tensor([0]), torch.tensor([2]), torch.tensor([3]), torch.tensor([0]))
    out = IntraPairVarianceLoss()(emb, indices_tuple=tup)
    assert out.item() == 0 and out.requires_grad


def test_single_class_has_only_the_positive_term():
    emb, _ = points()
    out = IntraPairVarianceLoss(pos_eps=0.1)(emb[:3], torch.tensor([0, 0, 0]))
    mu = sum(POS) / 3
    assert out.item() == pytest.approx(sum(max(0.0, 0.9 * mu - s) ** 2 for s in POS) / 3, rel=1e-6)


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = IntraPairVarianceLoss(pos_eps=0.3, neg_eps=0.3)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(32, 8)
    labels = torch.randint(0, 4, (32,))
    full = IntraPairVarianceLoss()(emb, labels)
    half = IntraPairVarianceLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-3)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        IntraPairVarianceLoss()(torch.randn(4, 3))
    with pytest.raises(ValueError):
        IntraPairVarianceLoss()(torch.randn(4, 3), torch.tensor([0, 1]))


@requires_reference
@pytest.mark.parametrize("use_miner", [False, True], ids=["all", "miner"])
@pytest.mark.parametrize("use_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("kwargs", [{}, {"pos_eps": 0.2, "neg_eps": 0.05, "distance": LpDistance()}],
                         ids=["cosine", "lp"])
def test_matches_reference(kwargs, use_miner, use_ref, dtype):
    from pytorch_metric_learning import distances as ref_distances
    from pytorch_metric_learning import losses as ref_losses
    from pytorch_metric_learning import miners as ref_miners

    torch.manual_seed(0)
    emb = torch.randn(32, 6, dtype=dtype)
    labels = torch.randint(0, 4, (32,))
    ref = torch.randn(20, 6, dtype=dtype) if use_ref else None
    ref_labels = torch.randint(0, 4, (20,)) if use_ref else None
    tup = ref_miners.MultiSimilarityMiner(epsilon=0.1)(emb, labels, ref, ref_labels) if use_miner else None
    ref_kwargs = dict(kwargs)
    if "distance" in kwargs:
        ref_kwargs["distance"] = ref_distances.LpDistance()
    results = []
    for loss in (IntraPairVarianceLoss(**kwargs), ref_losses.IntraPairVarianceLoss(**ref_kwargs)):
        e = emb.clone().requires_grad_(True)
        r = ref.clone().requires_grad_(True) if use_ref else None
        out = loss(e, labels, tup, r, ref_labels)
        results.append((out, torch.autograd.grad(out, [e] + ([r] if use_ref else []))))
    (ours, g_ours), (theirs, g_theirs) = results
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)
