"""RankedListLoss: hand-computed values, weights, dtypes, gradients, edge cases and the reference
library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import RankedListLoss
from deepmetric.reducers import DoNothingReducer, SumReducer

# Four points on a line, compared with raw Euclidean distance:
# d01 = .8, d02 = 1.5, d03 = .3, d12 = .7, d13 = .5, d23 = 1.2
POINTS = [[0.0], [0.8], [1.5], [0.3]]
LABELS = [0, 0, 1, 1]
RAW_L2 = dict(distance=LpDistance(normalize_embeddings=False))
# Per row: (positive violations d - (alpha - margin)), (negative violations alpha - d), for
# margin .4, alpha 1 (positive boundary .6).
VIOLATIONS = [
    ([0.2], [0.7]),
    ([0.2], [0.3, 0.5]),
    ([0.6], [0.3]),
    ([0.6], [0.7, 0.5]),
]


def points(dtype=torch.float64):
    return torch.tensor(POINTS, dtype=dtype, requires_grad=True), torch.tensor(LABELS)


def expected_rows(tp, tn, imbalance=0.5, n=4):
    rows = []
    for pos, neg in VIOLATIONS:
        wp = [math.exp(tp * v) for v in pos]
        wn = [math.exp(tn * v) for v in neg]
        lp = sum(w * v for w, v in zip(wp, pos)) / (sum(wp) + n * 1e-5)
        ln = sum(w * v for w, v in zip(wn, neg)) / (sum(wn) + n * 1e-5)
        rows.append((1 - imbalance) * lp + imbalance * ln)
    return rows


@pytest.mark.parametrize("tp,tn,imbalance", [(0, 0, 0.5), (0, 1.0, 0.5), (2.0, 3.0, 0.3)])
def test_hand_computed_rows(tp, tn, imbalance, dtype):
    emb, labels = points(dtype)
    loss = RankedListLoss(margin=0.4, Tn=tn, Tp=tp, alpha=1.0, imbalance=imbalance,
                          reducer=DoNothingReducer(), **RAW_L2)
    out = loss(emb, labels)["loss"]
    assert out["reduction_type"] == "element"
    assert out["indices"].tolist() == [0, 1, 2, 3]
    expected = torch.tensor(expected_rows(tp, tn, imbalance), dtype=dtype)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(out["losses"], expected, rtol=rtol * 10, atol=atol * 10)


def test_default_reducer_is_mean_over_all_rows():
    emb, labels = points()
    out = RankedListLoss(margin=0.4, Tn=0, alpha=1.0, **RAW_L2)(emb, labels)
    assert out.item() == pytest.approx(sum(expected_rows(0, 0)) / 4, rel=1e-9)


def test_default_alpha_is_one_plus_half_margin():
    loss = RankedListLoss(margin=0.4, Tn=1)
    assert loss.alpha == pytest.approx(1.2)
    assert {"imbalance", "alpha", "margin", "Tp", "Tn"} <= set(loss._record_these)


def test_satisfied_constraints_give_zero_rows():
    # Positives within .6 of each other and negatives at least 1 apart: no violations.
    emb = torch.tensor([[0.0], [0.5], [3.0], [3.2]], dtype=torch.float64, requires_grad=True)
    out = RankedListLoss(margin=0.4, Tn=1, alpha=1.0, **RAW_L2)(emb, torch.tensor(LABELS))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)


def test_duplicate_negatives_at_distance_zero_are_ignored():
    # Rows 0 and 1 coincide but have different labels: d = 0 is not counted as a violation.
    emb = torch.tensor([[0.0], [0.0]], dtype=torch.float64, requires_grad=True)
    out = RankedListLoss(margin=0.4, Tn=1, alpha=1.0, **RAW_L2)(emb, torch.tensor([0, 1]))
    assert out.item() == 0


@pytest.mark.parametrize("labels", [[0], [0, 1, 2], [4, 4, 4]], ids=["one", "distinct", "single_class"])
def test_edge_batches_are_finite_and_attached(labels):
    torch.manual_seed(0)
    emb = torch.randn(len(labels), 3, requires_grad=True)
    out = RankedListLoss(margin=0.4, Tn=1)(emb, torch.tensor(labels))
    assert torch.isfinite(out)
    out.backward()
    assert torch.isfinite(emb.grad).all()


def test_large_temperatures_do_not_make_nan_gradients():
    # Far-apart negatives make exp(Tp * (d - b)) overflow in cells that are not positives; the
    # exponent must be masked before exp or the zero gradient of torch.where becomes 0 * inf.
    emb = torch.tensor([[0.0], [0.7], [10.0], [10.7]], requires_grad=True)
    with pytest.warns(UserWarning):
        loss = RankedListLoss(margin=0.4, Tn=60.0, Tp=60.0, alpha=1.0, **RAW_L2)
    out = loss(emb, torch.tensor(LABELS))
    # each row: one positive with violation .1 (weight exp(6)), no negative inside alpha
    expected = 0.5 * (math.exp(6) * 0.1) / (math.exp(6) + 4e-5)
    assert out.item() == pytest.approx(expected, rel=1e-5)
    (grad,) = torch.autograd.grad(out, emb)
    assert torch.isfinite(grad).all()


def test_float16_close_to_float32():
    torch.manual_seed(2)
    emb = torch.randn(12, 5)
    labels = torch.randint(0, 3, (12,))
    loss = RankedListLoss(margin=0.4, Tn=1.0, Tp=0.5)
    half = loss(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), loss(emb, labels), rtol=2e-2, atol=2e-2)


def test_gradcheck():
    torch.manual_seed(3)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = RankedListLoss(margin=0.6, Tn=1.5, Tp=0.5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_sum_reducer():
    emb, labels = points()
    out = RankedListLoss(margin=0.4, Tn=0, alpha=1.0, reducer=SumReducer(), **RAW_L2)(emb, labels)
    assert out.item() == pytest.approx(sum(expected_rows(0, 0)), rel=1e-9)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="imbalance must be between 0 and 1, got 1.5"):
        RankedListLoss(margin=0.4, Tn=1, imbalance=1.5)
    with pytest.warns(UserWarning, match="Tp=6"):
        RankedListLoss(margin=0.4, Tn=1, Tp=6)
    with pytest.raises(TypeError):
        RankedListLoss(margin=0.4)  # Tn is required
    loss = RankedListLoss(margin=0.4, Tn=1)
    emb, labels = points()
    with pytest.raises(ValueError, match="labels"):
        loss(emb)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(emb, labels, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="ref_emb"):
        loss(emb, labels, ref_emb=emb.detach().clone(), ref_labels=labels)


@requires_reference
@pytest.mark.parametrize("kwargs", [
    {"margin": 0.4, "Tn": 1.0},
    {"margin": 0.8, "Tn": 3.0, "Tp": 2.0, "imbalance": 0.2},
    {"margin": 0.3, "Tn": 0.0, "alpha": 1.1},
    {"margin": 0.5, "Tn": 1.0, "distance": LpDistance(power=2)},
    {"margin": 0.2, "Tn": 1.0, "alpha": 0.5, "distance": CosineSimilarity()},
])
def test_matches_reference(kwargs, dtype):
    import pytorch_metric_learning.distances as ref_distances
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(4)
    emb = torch.randn(48, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 5, (48,))
    ours = RankedListLoss(**kwargs)(emb, labels)
    (g_ours,) = torch.autograd.grad(ours, emb)
    ref_kwargs = dict(kwargs)
    if "distance" in kwargs:
        dist = kwargs["distance"]
        ref_kwargs["distance"] = getattr(ref_distances, type(dist).__name__)(power=dist.power)
    theirs = ref_losses.RankedListLoss(**ref_kwargs)(emb, labels)
    (g_theirs,) = torch.autograd.grad(theirs, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_ours, g_theirs, rtol=rtol * 10, atol=atol * 10)
