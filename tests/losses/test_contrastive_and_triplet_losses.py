"""ContrastiveLoss and TripletMarginLoss: hand-computed values, dense vs per-tuple paths,
miner tuples, reference sets, dtypes and the reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance, SNRDistance
from deepmetric.losses import ContrastiveLoss, TripletMarginLoss
from deepmetric.ops import blocked_triplets
from deepmetric.reducers import (
    AvgNonZeroReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    SumReducer,
    ThresholdReducer,
)
from deepmetric.utils import loss_and_miner_utils as lmu

# Four points in the plane, compared with raw (un-normalised) Euclidean distance.
POINTS = [[0.0, 0.0], [0.5, 0.0], [2.0, 0.0], [0.3, 0.4]]
LABELS = [0, 0, 1, 1]
D01, D02, D03 = 0.5, 2.0, 0.5
D12, D13, D23 = 1.5, math.sqrt(0.2**2 + 0.4**2), math.sqrt(1.7**2 + 0.4**2)
RAW_L2 = dict(distance=LpDistance(normalize_embeddings=False))


def points(dtype=torch.float64):
    return torch.tensor(POINTS, dtype=dtype, requires_grad=True), torch.tensor(LABELS)


def test_contrastive_hand_computed(dtype):
    emb, labels = points(dtype)
    loss = ContrastiveLoss(pos_margin=0.2, neg_margin=1.0, **RAW_L2)
    # positives (both directions): [d - 0.2]+ -> 0.3, 0.3, d23 - 0.2 twice
    pos = (2 * 0.3 + 2 * (D23 - 0.2)) / 4
    # negatives: [1 - d]+ is non-zero for d03 = 0.5 and d13 (each twice)
    neg = (2 * (1 - D03) + 2 * (1 - D13)) / 4
    torch.testing.assert_close(loss(emb, labels).item(), pos + neg, rtol=1e-6, atol=1e-6)


def test_contrastive_with_similarity_flips_the_margins(dtype):
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=dtype)
    labels = torch.tensor([0, 0, 1])
    loss = ContrastiveLoss(pos_margin=1, neg_margin=0, distance=CosineSimilarity())
    # positive pair cos 0 -> [1 - 0]+ = 1 (twice); negatives cos 1/sqrt2 -> 1/sqrt2 (four times)
    expected = 1.0 + 1 / math.sqrt(2)
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_loss_dict_entries():
    emb, labels = points()
    out = ContrastiveLoss(reducer=DoNothingReducer())(emb, labels)
    a1, p = out["pos_loss"]["indices"]
    assert a1.tolist() == [0, 1, 2, 3] and p.tolist() == [1, 0, 3, 2]
    assert out["neg_loss"]["reduction_type"] == "neg_pair"
    assert len(out["neg_loss"]["losses"]) == 8


def test_contrastive_records_margins():
    loss = ContrastiveLoss(pos_margin=0.1, neg_margin=0.7)
    assert {"pos_margin", "neg_margin"} <= set(loss._record_these)


def test_contrastive_one_side_empty_still_counts_the_other():
    emb = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.6]], requires_grad=True)
    labels = torch.tensor([0, 1, 2])  # no positive pairs
    out = ContrastiveLoss(**RAW_L2)(emb, labels)
    # negatives: d01 = .5, d02 = .6, d12 = sqrt(.61); [1 - d]+ each twice
    expected = ((1 - 0.5) + (1 - 0.6) + (1 - math.sqrt(0.61))) / 3
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_per_sub_loss_reducers():
    emb, labels = points()
    reducer = MultipleReducers({"pos_loss": ThresholdReducer(0.5), "neg_loss": MeanReducer()})
    loss = ContrastiveLoss(pos_margin=0.2, neg_margin=1.0, reducer=reducer, **RAW_L2)
    pos = D23 - 0.2  # only the two (2, 3) terms exceed 0.5
    neg = (2 * (1 - D03) + 2 * (1 - D13)) / 8
    assert loss(emb, labels).item() == pytest.approx(pos + neg, rel=1e-6)


@pytest.mark.parametrize("reducer", [AvgNonZeroReducer(), MeanReducer(), SumReducer(),
                                     ThresholdReducer(low=0.1, high=0.9)], ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("distance", [LpDistance(), CosineSimilarity()], ids=lambda d: type(d).__name__)
def test_contrastive_dense_path_equals_per_pair_path(reducer, distance, dtype):
    torch.manual_seed(7)
    emb = torch.randn(20, 6, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (20,))
    margins = {"pos_margin": 1, "neg_margin": 0} if distance.is_inverted else {}
    loss = ContrastiveLoss(reducer=reducer, distance=distance, **margins)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, indices_tuple=lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 10, atol=atol * 10)


# ---------------------------------------------------------------- TripletMarginLoss

TRIPLET_TERMS = [  # (anchor, positive, negative): d_ap - d_an + 0.1
    D01 - D02 + 0.1, D01 - D03 + 0.1,  # a=0, p=1, n=2,3
    D01 - D12 + 0.1, D01 - D13 + 0.1,  # a=1, p=0
    D23 - D02 + 0.1, D23 - D12 + 0.1,  # a=2, p=3, n=0,1
    D23 - D03 + 0.1, D23 - D13 + 0.1,  # a=3, p=2
]


def test_triplet_hand_computed(dtype):
    emb, labels = points(dtype)
    positive = [t for t in TRIPLET_TERMS if t > 0]
    out = TripletMarginLoss(margin=0.1, **RAW_L2)(emb, labels)
    assert out.item() == pytest.approx(sum(positive) / len(positive), rel=1e-6)
    mean = TripletMarginLoss(margin=0.1, reducer=MeanReducer(), **RAW_L2)(emb, labels)
    assert mean.item() == pytest.approx(sum(positive) / 8, rel=1e-6)


def test_triplet_smooth_loss(dtype):
    emb, labels = points(dtype)
    out = TripletMarginLoss(margin=0.1, smooth_loss=True, **RAW_L2)(emb, labels)
    softplus = [math.log1p(math.exp(t)) for t in TRIPLET_TERMS]
    assert out.item() == pytest.approx(sum(softplus) / 8, rel=1e-6)


def test_triplet_with_cosine_similarity_uses_s_an_minus_s_ap():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    out = TripletMarginLoss(margin=0.2, distance=CosineSimilarity(), reducer=DoNothingReducer())(
        emb, labels
    )
    c = 1 / math.sqrt(2)
    # triplets (0,1,2): s_an - s_ap + .2 = 0 - c + .2 -> 0; (1,0,2): c - c + .2 = .2
    torch.testing.assert_close(
        out["loss"]["losses"], torch.tensor([max(0.0, 0 - c + 0.2), c - c + 0.2], dtype=torch.float64)
    )


def test_triplet_no_triplets_gives_attached_zero():
    emb = torch.randn(3, 4, requires_grad=True)
    out = TripletMarginLoss()(emb, torch.tensor([0, 1, 2]))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)


REDUCERS = [
    AvgNonZeroReducer(), MeanReducer(), SumReducer(), ThresholdReducer(low=0.05, high=0.4),
    ThresholdReducer(low=0.05), ThresholdReducer(high=0.4),
]


@pytest.mark.parametrize("reducer", REDUCERS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("kwargs", [
    {}, {"smooth_loss": True}, {"distance": CosineSimilarity(), "margin": 0.3},
    {"distance": LpDistance(power=2), "margin": 0.5}, {"distance": SNRDistance()},
])
def test_triplet_dense_path_equals_per_triplet_path(reducer, kwargs, dtype, monkeypatch):
    # A tiny block forces several blocks, so block boundaries are exercised too.
    monkeypatch.setattr(blocked_triplets, "CELLS_PER_BLOCK", 50)
    torch.manual_seed(0)
    emb = torch.randn(24, 5, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (24,))
    loss = TripletMarginLoss(reducer=reducer, **kwargs)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, indices_tuple=lmu.get_all_triplets_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_dense, g_listed, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("reducer", REDUCERS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("distance", [LpDistance(), CosineSimilarity()], ids=lambda d: type(d).__name__)
def test_triplet_dense_path_with_many_positives_per_anchor(reducer, distance):
    # About 20 positives per anchor: the bounds are found by binary search instead of one
    # comparison pass per positive.
    torch.manual_seed(3)
    emb = torch.randn(40, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 2, (40,))
    loss = TripletMarginLoss(reducer=reducer, distance=distance, margin=0.3)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, indices_tuple=lmu.get_all_triplets_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    torch.testing.assert_close(dense, listed)
    torch.testing.assert_close(g_dense, g_listed)


def test_triplet_dense_path_counts_hinges_of_a_few_ulps():
    # In this batch one triplet's hinge is 4.8e-8: the per-triplet computation keeps it, so
    # AvgNonZeroReducer divides by 3334, not 3333 (a relative difference of 3e-4).
    torch.manual_seed(1)
    emb = torch.randn(32, 16)
    labels = torch.arange(4).repeat_interleave(8)
    dense = TripletMarginLoss()(emb, labels)
    listed = TripletMarginLoss()(emb, labels, indices_tuple=lmu.get_all_triplets_indices(labels))
    torch.testing.assert_close(dense, listed, rtol=1e-6, atol=0)
    torch.testing.assert_close(dense, torch.tensor(0.23283029), rtol=1e-6, atol=0)  # the reference's


@pytest.mark.parametrize("reducer", REDUCERS[:2] + REDUCERS[3:4], ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("distance", [LpDistance(), CosineSimilarity()], ids=lambda d: type(d).__name__)
def test_triplet_dense_path_decides_near_zero_hinges_exactly(reducer, distance, dtype):
    # Embeddings on a grid tie many distances exactly, and a margin equal to one of the gaps
    # puts many hinges within rounding of zero (or of a threshold): the counts must agree.
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        emb = torch.randint(-1, 2, (24, 6), generator=g).to(dtype)
        emb[emb.abs().sum(1) == 0, 0] = 1
        labels = torch.randint(0, 3, (24,), generator=g)
        mat = distance(emb)
        margin = float((mat[0, 1] - mat[0, 2]).abs()) + (0.1 if seed == 2 else 0.0)
        loss = TripletMarginLoss(margin=margin, distance=distance, reducer=reducer)
        emb.requires_grad_(True)
        dense = loss(emb, labels)
        (g_dense,) = torch.autograd.grad(dense, emb)
        listed = loss(emb, labels, indices_tuple=lmu.get_all_triplets_indices(labels))
        (g_listed,) = torch.autograd.grad(listed, emb)
        torch.testing.assert_close(dense, listed, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(g_dense, g_listed, rtol=1e-5, atol=1e-7)


def test_triplet_dense_path_with_reference_set(dtype):
    torch.manual_seed(1)
    emb = torch.randn(8, 5, dtype=dtype, requires_grad=True)
    ref = torch.randn(10, 5, dtype=dtype, requires_grad=True)
    labels, ref_labels = torch.randint(0, 3, (8,)), torch.randint(0, 3, (10,))
    loss = TripletMarginLoss(margin=0.2)
    dense = loss(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    g_dense = torch.autograd.grad(dense, (emb, ref))
    trip = lmu.get_all_triplets_indices(labels, ref_labels)
    listed = loss(emb, labels, indices_tuple=trip, ref_emb=ref, ref_labels=ref_labels)
    g_listed = torch.autograd.grad(listed, (emb, ref))
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    for a, b in zip(g_dense, g_listed):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


def test_triplet_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = TripletMarginLoss(margin=0.5, smooth_loss=True)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_triplet_accepts_miner_triplets_and_pairs():
    emb, labels = points()
    loss = TripletMarginLoss(margin=0.1, reducer=DoNothingReducer(), **RAW_L2)
    trip = (torch.tensor([3]), torch.tensor([2]), torch.tensor([1]))
    out = loss(emb, indices_tuple=trip)["loss"]["losses"]
    assert out.item() == pytest.approx(TRIPLET_TERMS[7])
    # pairs sharing anchor 3: positive (3, 2) with negatives (3, 0) and (3, 1)
    pairs = (torch.tensor([3]), torch.tensor([2]), torch.tensor([3, 3]), torch.tensor([0, 1]))
    out = loss(emb, indices_tuple=pairs)["loss"]["losses"]
    torch.testing.assert_close(out, torch.tensor(TRIPLET_TERMS[6:8], dtype=torch.float64))


def test_triplet_random_triplets_per_anchor():
    torch.manual_seed(3)
    emb = torch.randn(12, 4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    out = TripletMarginLoss(triplets_per_anchor=5, reducer=DoNothingReducer())(emb, labels)
    a, p, n = out["loss"]["indices"]
    assert len(a) == 12 * 5
    assert torch.all(labels[a] == labels[p]) and torch.all(a != p)
    assert torch.all(labels[a] != labels[n])


def test_triplet_swap_uses_positive_negative_distance():
    emb, labels = points()
    out = TripletMarginLoss(margin=0.1, swap=True, reducer=DoNothingReducer(), **RAW_L2)(
        emb, labels
    )["loss"]["losses"]
    # triplet (0, 1, 2): d_an = min(d02, d12) = 1.5 -> 0.5 - 1.5 + .1 < 0
    # triplet (0, 1, 3): d_an = min(d03, d13) = d13 -> 0.5 - d13 + .1
    assert out[0].item() == 0
    assert out[1].item() == pytest.approx(0.6 - D13)


def test_triplet_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(32, 8)
    labels = torch.randint(0, 4, (32,))
    full = TripletMarginLoss(margin=0.2)(emb, labels)
    half = TripletMarginLoss(margin=0.2)(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)


def test_large_batch_does_not_list_all_triplets():
    # 1024 x 1024 with 4 classes has ~200 million triplets (several GB as index lists); the
    # dense path keeps only N x N matrices.
    torch.manual_seed(5)
    emb = torch.randn(1024, 16, requires_grad=True)
    labels = torch.arange(1024) % 4
    out = TripletMarginLoss()(emb, labels)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


@requires_reference
@pytest.mark.parametrize("name,kwargs", [
    ("ContrastiveLoss", {}),
    ("ContrastiveLoss", {"pos_margin": 0.1, "neg_margin": 0.8}),
    ("TripletMarginLoss", {}),
    ("TripletMarginLoss", {"margin": 0.3, "smooth_loss": True}),
    ("TripletMarginLoss", {"swap": True}),
])
@pytest.mark.parametrize("with_ref", [False, True])
def test_matches_reference(name, kwargs, with_ref, dtype):
    import pytorch_metric_learning.losses as ref_losses

    import deepmetric.losses as our_losses

    torch.manual_seed(6)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 6, (40,))
    call = {}
    if with_ref:
        call = {"ref_emb": torch.randn(20, 8, dtype=dtype), "ref_labels": torch.randint(0, 6, (20,))}
    ours = getattr(our_losses, name)(**kwargs)(emb, labels, **call)
    (g_ours,) = torch.autograd.grad(ours, emb)
    theirs = getattr(ref_losses, name)(**kwargs)(emb, labels, **call)
    (g_theirs,) = torch.autograd.grad(theirs, emb)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(g_ours, g_theirs, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "IntraPairVarianceLoss", "TripletMarginLoss"])
def test_float16_dense_path_rounds_like_the_listed_terms(name):
    # A mean of float16 terms is accumulated in float32 and rounded once (torch.mean); the dense
    # path must not round its sum first, or it differs from the listed terms in the last bit.
    import deepmetric.losses as losses

    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        emb = torch.randn(32, 8, generator=g).half()
        labels = torch.randint(0, 5, (32,), generator=g)
        loss = getattr(losses, name)()
        listed_tuple = (
            lmu.get_all_triplets_indices(labels) if name == "TripletMarginLoss"
            else lmu.get_all_pairs_indices(labels)
        )
        dense, listed = loss(emb, labels), loss(emb, labels, indices_tuple=listed_tuple)
        torch.testing.assert_close(dense, listed, rtol=1e-5, atol=0)
