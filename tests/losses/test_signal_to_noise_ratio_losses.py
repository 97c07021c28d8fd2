"""SignalToNoiseRatioContrastiveLoss: hand-computed values on the SNR distance, distance check,
miner pairs, reference sets, dtypes, gradients and the reference library as an oracle."""

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import LpDistance, SNRDistance
from deepmetric.losses import SignalToNoiseRatioContrastiveLoss
from deepmetric.reducers import DoNothingReducer, MeanReducer
from deepmetric.utils import loss_and_miner_utils as lmu

POINTS = [[1.0, 2.0, 3.0], [1.0, 2.0, 4.0], [3.0, 2.0, 1.5]]
LABELS = [0, 0, 1]


def snr(x, y):
    # var(y - x) / var(x), unbiased over the features
    return (torch.var(y - x) / torch.var(x)).item()


def test_hand_computed(dtype):
    x = torch.tensor(POINTS, dtype=dtype)
    loss = SignalToNoiseRatioContrastiveLoss(
        pos_margin=0.1, neg_margin=3.0, distance=SNRDistance(normalize_embeddings=False), reducer=MeanReducer()
    )
    out = loss(x.clone().requires_grad_(True), torch.tensor(LABELS))
    pos = [max(0.0, snr(x[0], x[1]) - 0.1), max(0.0, snr(x[1], x[0]) - 0.1)]
    neg = [max(0.0, 3.0 - snr(x[i], x[j])) for i, j in [(0, 2), (1, 2), (2, 0), (2, 1)]]
    assert out.item() == pytest.approx(sum(pos) / 2 + sum(neg) / 4, rel=1e-5)


def test_defaults_and_records():
    loss = SignalToNoiseRatioContrastiveLoss()
    assert isinstance(loss.distance, SNRDistance)
    assert (loss.pos_margin, loss.neg_margin) == (0, 1)
    assert {"pos_margin", "neg_margin"} <= set(loss._record_these)
    assert loss.sub_loss_names() == ["pos_loss", "neg_loss"]


def test_loss_dict_entries():
    x = torch.tensor(POINTS)
    out = SignalToNoiseRatioContrastiveLoss(reducer=DoNothingReducer())(x, torch.tensor(LABELS))
    assert out["pos_loss"]["reduction_type"] == "pos_pair" and len(out["pos_loss"]["losses"]) == 2
    assert out["neg_loss"]["reduction_type"] == "neg_pair" and len(out["neg_loss"]["losses"]) == 4


def test_other_distances_are_rejected():
    with pytest.raises(AssertionError, match="SNRDistance"):
        SignalToNoiseRatioContrastiveLoss(distance=LpDistance())
    with pytest.raises(ValueError):
        SignalToNoiseRatioContrastiveLoss(distance=LpDistance())


def test_dense_path_equals_pair_list_path(dtype):
    torch.manual_seed(0)
    emb = torch.randn(20, 6, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    loss = SignalToNoiseRatioContrastiveLoss(neg_margin=1.5)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("labels", [[0, 0, 0], [5]], ids=["single-class", "batch-of-1"])
def test_degenerate_batches_are_finite(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = SignalToNoiseRatioContrastiveLoss()(emb, torch.tensor(labels))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_batch_of_one_is_zero():
    emb = torch.randn(1, 4, requires_grad=True)
    out = SignalToNoiseRatioContrastiveLoss()(emb, torch.tensor([0]))
    assert out.item() == 0 and out.requires_grad


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = SignalToNoiseRatioContrastiveLoss(pos_margin=0.2, neg_margin=2.5, reducer=MeanReducer())
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(32, 8)
    labels = torch.randint(0, 4, (32,))
    full = SignalToNoiseRatioContrastiveLoss()(emb, labels)
    half = SignalToNoiseRatioContrastiveLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)


@requires_reference
@pytest.mark.parametrize("use_miner", [False, True], ids=["all", "miner"])
@pytest.mark.parametrize("use_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("kwargs", [{}, {"pos_margin": 0.3, "neg_margin": 1.5}], ids=["default", "margins"])
def test_matches_reference(kwargs, use_miner, use_ref, dtype):
    from pytorch_metric_learning import losses as ref_losses
    from pytorch_metric_learning import miners as ref_miners

    torch.manual_seed(0)
    emb = torch.randn(32, 6, dtype=dtype)
    labels = torch.randint(0, 4, (32,))
    ref = torch.randn(20, 6, dtype=dtype) if use_ref else None
    ref_labels = torch.randint(0, 4, (20,)) if use_ref else None
    tup = ref_miners.MultiSimilarityMiner(epsilon=0.1)(emb, labels, ref, ref_labels) if use_miner else None
    results = []
    for loss in (SignalToNoiseRatioContrastiveLoss(**kwargs), ref_losses.SignalToNoiseRatioContrastiveLoss(**kwargs)):
        e = emb.clone().requires_grad_(True)
        r = ref.clone().requires_grad_(True) if use_ref else None
        out = loss(e, labels, tup, r, ref_labels)
        results.append((out, torch.autograd.grad(out, [e] + ([r] if use_ref else []))))
    (ours, g_ours), (theirs, g_theirs) = results
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 100, atol=atol * 100)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=rtol * 100, atol=atol * 100)
