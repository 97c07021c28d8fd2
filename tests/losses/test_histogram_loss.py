"""HistogramLoss: hand-computed histograms, pair sets from labels and from miner tuples, bins,
dtypes, gradients, edge cases and the reference library as an oracle."""

import math

import pytest
import torch
from _ranking_helpers import assert_same_as_reference, grad_of

from conftest import requires_reference, tolerance
from deepmetric.distances import LpDistance
from deepmetric.losses import HistogramLoss
from deepmetric.losses.histogram_loss import filter_pairs
from deepmetric.miners import MultiSimilarityMiner, TripletMarginMiner
from deepmetric.utils import loss_and_miner_utils as lmu

# The reference indexes with nested lists, which torch warns about.
reference_warning = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")


def circle(degrees, dtype=torch.float64):
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).to(dtype).requires_grad_(True)


def test_hand_computed_value(dtype):
    # 0 and 90 degrees (label 0), 60 and 240 (label 1); n_bins=2 -> nodes -1, 0, 1.
    # positives: cos 0 and -1 -> p+ = [1/2, 1/2, 0], Phi+ = [1/2, 1, 1]
    # negatives: 1/2, -1/2, c, -c (c = sqrt3/2) -> p- = [(1/2 + c), (3 - 2c), (1/2 + c)] / 4
    emb = circle([0, 90, 60, 240], dtype)
    out = HistogramLoss(n_bins=2)(emb, torch.tensor([0, 0, 1, 1]))
    c = math.sqrt(3) / 2
    assert out.dtype == dtype
    assert out.item() == pytest.approx((7.5 - c) / 8, rel=1e-6)


def test_similarity_of_exactly_one_goes_to_the_last_node():
    # identical negatives (cos 1) and orthogonal positives (cos 0): every negative pair at or
    # above every positive pair -> loss 1, finite gradients (the reference raises here)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    out = HistogramLoss(n_bins=2)(emb, torch.tensor([0, 0, 1, 1]))
    assert out.item() == pytest.approx(1.0)
    assert torch.isfinite(grad_of(out, emb)).all()
    # and the opposite: identical positives, orthogonal negatives -> 0
    out = HistogramLoss(n_bins=2)(emb, torch.tensor([0, 1, 0, 1]))
    assert out.item() == pytest.approx(0.0)


def test_label_pairs_equal_the_pairs_of_all_triplets():
    torch.manual_seed(0)
    emb = torch.randn(12, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])  # singletons 2, 4, 5 are negatives only
    dense = HistogramLoss(n_bins=20)(emb, labels)
    listed = HistogramLoss(n_bins=20)(emb, labels, lmu.get_all_triplets_indices(labels))
    torch.testing.assert_close(dense, listed)


def test_pair_tuple_uses_the_pairs_that_share_an_anchor():
    torch.manual_seed(1)
    emb = torch.randn(10, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (10,))
    pairs = MultiSimilarityMiner(epsilon=0.5)(emb, labels)
    from_pairs = HistogramLoss(n_bins=10)(emb, indices_tuple=pairs)
    triplets = lmu.convert_to_triplets(pairs, labels, t_per_anchor="all")
    torch.testing.assert_close(from_pairs, HistogramLoss(n_bins=10)(emb, indices_tuple=triplets))


def test_filter_pairs_sorts_and_deduplicates():
    a, b = torch.tensor([3, 1, 0, 1]), torch.tensor([1, 3, 2, 3])
    assert filter_pairs(a, b) == [[0, 1], [2, 3]]


def test_bins_from_n_bins_or_delta():
    assert HistogramLoss().delta == pytest.approx(0.02)
    assert HistogramLoss(n_bins=4).delta == 0.5
    assert HistogramLoss(delta=0.25).delta == 0.25
    assert HistogramLoss(n_bins=4, delta=0.5).delta == 0.5
    assert "delta" in HistogramLoss()._record_these


def test_n_bins_and_delta_must_agree():
    with pytest.raises(AssertionError, match="delta = 2/n_bins"):
        HistogramLoss(n_bins=4, delta=0.4)


@pytest.mark.parametrize("kwargs", [{"n_bins": 0}, {"n_bins": -2}, {"delta": 0}, {"delta": 3}])
def test_bad_bins_are_rejected(kwargs):
    with pytest.raises(ValueError, match="HistogramLoss"):
        HistogramLoss(**kwargs)


def test_values_outside_minus_one_one_are_rejected():
    emb = torch.randn(6, 3) * 5
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        HistogramLoss(distance=LpDistance(normalize_embeddings=False))(emb, torch.tensor([0, 0, 1, 1, 2, 2]))


@pytest.mark.parametrize("labels", [[0], [0, 1, 2], [1, 1, 1]], ids=["batch_of_one", "all_distinct", "one_class"])
def test_no_triplet_gives_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = HistogramLoss()(emb, torch.tensor(labels))
    assert out.item() == 0 and out.requires_grad
    assert torch.all(grad_of(out, emb) == 0)


def test_empty_tuples_give_zero():
    emb = torch.randn(4, 3, requires_grad=True)
    empty = torch.tensor([], dtype=torch.long)
    assert HistogramLoss()(emb, indices_tuple=(empty, empty, empty)).item() == 0
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), torch.tensor([3]))  # no shared anchor
    assert HistogramLoss()(emb, indices_tuple=pairs).item() == 0


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda x: HistogramLoss(n_bins=7)(x, labels), (emb,))


def test_float16_matches_float32():
    torch.manual_seed(3)
    emb = torch.randn(24, 8)
    labels = torch.randint(0, 3, (24,))
    full = HistogramLoss(n_bins=20)(emb, labels)
    half = HistogramLoss(n_bins=20)(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_labels_or_indices_are_required():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        HistogramLoss()(torch.randn(4, 3))


def test_reference_set_is_rejected():
    with pytest.raises(ValueError, match="ref_emb"):
        HistogramLoss()(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), ref_emb=torch.randn(2, 3),
                        ref_labels=torch.tensor([0, 1]))


# ---------------------------------------------------------------- oracle


@requires_reference
@reference_warning
@pytest.mark.parametrize("n_bins,num_classes", [(100, 4), (10, 2), (37, 7), (50, 30)])
@pytest.mark.parametrize("miner", [None, "pairs", "triplets"])
def test_matches_reference(n_bins, num_classes, miner, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(4)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, num_classes, (40,))
    call = {}
    if miner == "pairs":
        call["indices_tuple"] = MultiSimilarityMiner(epsilon=0.2)(emb, labels)
    elif miner == "triplets":
        call["indices_tuple"] = TripletMarginMiner(margin=0.3)(emb, labels)
    # the reference places the nodes in float32 even for float64 input (about 1e-7 off)
    scale = 10 if dtype == torch.float32 else 1e5
    assert_same_as_reference(HistogramLoss(n_bins=n_bins), ref_losses.HistogramLoss(n_bins=n_bins),
                             (emb, labels), dtype, scale=scale, **call)


@requires_reference
@reference_warning
def test_matches_reference_with_indices_only():
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(5)
    emb = torch.randn(20, 6, requires_grad=True)
    labels = torch.randint(0, 3, (20,))
    triplets = TripletMarginMiner(margin=0.5)(emb, labels)
    assert_same_as_reference(HistogramLoss(n_bins=25), ref_losses.HistogramLoss(n_bins=25), (emb,),
                             torch.float32, indices_tuple=triplets)


@requires_reference
@reference_warning
def test_matches_reference_in_float16():
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(6)
    emb = torch.randn(16, 8).half()
    labels = torch.randint(0, 3, (16,))
    rtol, atol = tolerance(torch.float16)
    torch.testing.assert_close(HistogramLoss(n_bins=20)(emb, labels),
                               ref_losses.HistogramLoss(n_bins=20)(emb, labels), rtol=rtol, atol=atol)
