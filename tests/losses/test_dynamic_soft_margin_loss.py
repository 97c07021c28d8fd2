"""DynamicSoftMarginLoss: hand-computed histogram and loss, running state, blocked vs listed
triplets, values outside the histogram range, dtypes, gradients and the reference library."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import DynamicSoftMarginLoss
from deepmetric.losses.dynamic_soft_margin_loss import find_hard_negatives
from deepmetric.miners import MultiSimilarityMiner, TripletMarginMiner
from deepmetric.ops import blocked_triplets
from deepmetric.reducers import DoNothingReducer
from deepmetric.utils import loss_and_miner_utils as lmu

R2 = math.sqrt(2)
# Unit vectors at 0, 90 and 180 degrees: d01 = d12 = sqrt 2, d02 = 2.
POINTS = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
LABELS = [0, 0, 1]
# Triplets (0, 1, 2): v = sqrt2 - 2;  (1, 0, 2): v = sqrt2 - sqrt2 = 0.
V = [R2 - 2, 0.0]


def points(dtype=torch.float64):
    return torch.tensor(POINTS, dtype=dtype, requires_grad=True), torch.tensor(LABELS)


def interpolated_mass(values, min_val=-2.0, num_bins=10):
    delta = 2 * abs(min_val) / num_bins
    mass = [0.0] * num_bins
    for v in values:
        t = (v - min_val) / delta
        b = math.floor(t)
        mass[b] += 1 - (t - b)
        mass[b + 1] += t - b
    return mass


def loss_from_hist(hist, values, min_val=-2.0, num_bins=10):
    delta = 2 * abs(min_val) / num_bins
    cdf = [sum(hist[: k + 1]) for k in range(num_bins)]
    return sum(cdf[math.floor((v - min_val) / delta)] * v for v in values) / len(values)


def test_first_call_hand_computed(dtype):
    emb, labels = points(dtype)
    loss = DynamicSoftMarginLoss()
    out = loss(emb, labels)
    # t = 3.5355 -> bins 3/4 get .4645/.5355; t = 5 -> bin 5 gets 1; normalised by 2.
    hist = [m / 2 for m in interpolated_mass(V)]
    assert hist[3] == pytest.approx((1 - (5 * (R2 - 2) / 2 + 5 - 3)) / 2)
    assert out.item() == pytest.approx(loss_from_hist(hist, V), rel=1e-5)
    assert out.item() == pytest.approx(hist[3] * (R2 - 2) / 2, rel=1e-5)
    torch.testing.assert_close(loss.hist_, torch.tensor(hist, dtype=dtype))


def test_second_call_uses_momentum():
    emb, labels = points()
    loss = DynamicSoftMarginLoss(momentum=0.1)
    loss(emb, labels)
    first = [m / 2 for m in interpolated_mass(V)]
    shifted = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)
    d01, d02, d12 = math.sqrt(0.4**2 + 0.8**2), 2.0, math.sqrt(1.6**2 + 0.8**2)
    values = [d01 - d02, d01 - d12]
    mixed = [0.9 * h + 0.1 * m for h, m in zip(first, interpolated_mass(values))]
    hist = [h / sum(mixed) for h in mixed]
    out = loss(shifted, labels)
    assert out.item() == pytest.approx(loss_from_hist(hist, values), rel=1e-9)
    torch.testing.assert_close(loss.hist_, torch.tensor(hist, dtype=torch.float64))


def test_second_backward_works_and_state_is_detached():
    torch.manual_seed(0)
    loss = DynamicSoftMarginLoss()
    emb = torch.randn(10, 4, requires_grad=True)
    labels = torch.randint(0, 3, (10,))
    for _ in range(3):
        loss(emb, labels).backward()
    assert not loss.hist_.requires_grad
    assert "hist_" not in loss.state_dict()
    assert "num_bins" in loss._record_these


def test_without_labels_uses_hardest_off_diagonal_negative():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    ref = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    out = DynamicSoftMarginLoss(reducer=DoNothingReducer())(emb, ref_emb=ref)["loss"]
    # pairs: (0, 0) d = sqrt2, hardest negative min(d(e1, r0)=0, d(e0, r1)=sqrt2) = 0 -> v = sqrt2
    #        (1, 1) d = 0,     hardest negative min(d(e0, r1)=sqrt2, d(e1, r0)=0) = 0 -> v = 0
    values = [R2, 0.0]
    hist = [m / 2 for m in interpolated_mass(values)]
    assert out["reduction_type"] == "already_reduced"
    assert out["losses"].item() == pytest.approx(loss_from_hist(hist, values), rel=1e-9)


def test_find_hard_negatives():
    dmat = torch.tensor([[0.5, 0.2, 0.9], [0.3, 0.1, 0.8], [0.7, 0.6, 0.4]])
    pos, neg = find_hard_negatives(dmat)
    torch.testing.assert_close(pos, torch.tensor([0.5, 0.1, 0.4]))
    torch.testing.assert_close(neg, torch.tensor([0.2, 0.2, 0.6]))
    assert torch.all(dmat.diagonal() == math.inf)


def test_values_beyond_the_histogram_range_are_clamped():
    # d_ap = 2, d_an = 0: v = 2 lies past the last bin (the reference raises an index error).
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = DynamicSoftMarginLoss(reducer=DoNothingReducer())
    out = loss(emb, torch.tensor([0, 0, 1]))["loss"]["losses"]
    # triplets: (0,1,2) v = 2 - 0 = 2 (clamped to the last bin), (1,0,2) v = 2 - 2 = 0 (bin 5)
    assert out.item() == pytest.approx((1.0 * 2 + 0.5 * 0) / 2, rel=1e-5)
    out.backward()
    assert torch.isfinite(emb.grad).all()


def test_no_triplets_and_single_pairs_give_attached_zero():
    emb = torch.randn(3, 4, requires_grad=True)
    out = DynamicSoftMarginLoss()(emb, torch.tensor([0, 1, 2]))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)
    one = torch.randn(1, 4, requires_grad=True)
    out = DynamicSoftMarginLoss()(one)
    assert out.item() == 0 and out.requires_grad


@pytest.mark.parametrize("with_ref", [False, True])
def test_blocked_path_equals_listed_triplets(with_ref, dtype, monkeypatch):
    monkeypatch.setattr(blocked_triplets, "CELLS_PER_BLOCK", 64)
    torch.manual_seed(1)
    emb = torch.randn(24, 5, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (24,))
    call, ref_labels = {}, None
    if with_ref:
        ref_labels = torch.randint(0, 4, (15,))
        call = {"ref_emb": torch.randn(15, 5, dtype=dtype), "ref_labels": ref_labels}
    blocked_loss, listed_loss = DynamicSoftMarginLoss(), DynamicSoftMarginLoss()
    triplets = lmu.get_all_triplets_indices(labels, ref_labels)
    rtol, atol = tolerance(dtype)
    for _ in range(2):  # the second call exercises the running histogram
        blocked = blocked_loss(emb, labels, **call)
        (g_blocked,) = torch.autograd.grad(blocked, emb)
        listed = listed_loss(emb, labels, indices_tuple=triplets, **call)
        (g_listed,) = torch.autograd.grad(listed, emb)
        torch.testing.assert_close(blocked, listed, rtol=rtol * 10, atol=atol * 10)
        torch.testing.assert_close(g_blocked, g_listed, rtol=rtol * 10, atol=atol * 10)
        torch.testing.assert_close(blocked_loss.hist_, listed_loss.hist_, rtol=rtol * 10, atol=atol * 10)


def test_float16_close_to_float32():
    torch.manual_seed(2)
    emb = torch.randn(16, 8)
    labels = torch.randint(0, 3, (16,))
    half = DynamicSoftMarginLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), DynamicSoftMarginLoss()(emb, labels), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("labelled", [True, False])
def test_gradcheck(labelled):
    torch.manual_seed(3)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2]) if labelled else None

    def fn(e):
        return DynamicSoftMarginLoss(min_val=-2.5)(e, labels)

    assert torch.autograd.gradcheck(fn, (emb,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="LpDistance"):
        DynamicSoftMarginLoss(distance=CosineSimilarity())
    with pytest.raises(AssertionError, match="normalize_embeddings"):
        DynamicSoftMarginLoss(distance=LpDistance(normalize_embeddings=False))
    with pytest.raises(ValueError, match="num_bins must be at least 2, got 1"):
        DynamicSoftMarginLoss(num_bins=1)


@requires_reference
@pytest.mark.parametrize("mode", ["labels", "pair_miner", "triplet_miner", "ref"])
def test_matches_reference_over_several_calls(mode, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(4)
    ours, theirs = DynamicSoftMarginLoss(min_val=-2.5), ref_losses.DynamicSoftMarginLoss(min_val=-2.5)
    rtol, atol = tolerance(dtype)
    for step in range(3):
        emb = torch.randn(32, 8, dtype=dtype, requires_grad=True)
        labels = torch.randint(0, 4, (32,))
        call = {}
        if mode == "pair_miner":
            call["indices_tuple"] = MultiSimilarityMiner(epsilon=0.3)(emb, labels)
        elif mode == "triplet_miner":
            call["indices_tuple"] = TripletMarginMiner(margin=0.2)(emb, labels)
        elif mode == "ref":
            call = {"ref_emb": torch.randn(20, 8, dtype=dtype), "ref_labels": torch.randint(0, 4, (20,))}
        a = ours(emb, labels, **call)
        (g_a,) = torch.autograd.grad(a, emb)
        b = theirs(emb, labels, **call)
        (g_b,) = torch.autograd.grad(b, emb)
        theirs.hist_ = theirs.hist_.detach()  # the reference keeps the graph (its second backward fails)
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10, msg=f"step {step}")
        torch.testing.assert_close(g_a, g_b, rtol=rtol * 10, atol=atol * 10, msg=f"step {step}")
        torch.testing.assert_close(ours.hist_, theirs.hist_, rtol=rtol * 10, atol=atol * 10)


@requires_reference
@pytest.mark.parametrize("ref_rows", [None, 20, 40])
def test_matches_reference_without_labels(ref_rows, dtype):
    # The reference overwrites the distance matrix in place, so its backward fails here: values only.
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(5)
    emb = torch.randn(30, 8, dtype=dtype)
    call = {} if ref_rows is None else {"ref_emb": torch.randn(ref_rows, 8, dtype=dtype)}
    ours, theirs = DynamicSoftMarginLoss(), ref_losses.DynamicSoftMarginLoss()
    rtol, atol = tolerance(dtype)
    for _ in range(2):
        torch.testing.assert_close(ours(emb, **call), theirs(emb, **call), rtol=rtol * 10, atol=atol * 10)
