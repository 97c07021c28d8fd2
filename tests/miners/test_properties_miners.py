"""Property-based checks over every miner (hypothesis).

For random batches (empty, single-class and all-distinct ones included), dtypes and optional
reference sets, every miner must return index tuples that are in range, pair or triple up
correctly by label (a positive shares the anchor's label, a negative does not), and never an
anchor paired with itself when the reference is the batch; or raise only a ValueError/TypeError
with a message.
"""

import os

import pytest
import torch

from deepmetric import miners

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FACTORIES = {
    "AngularMiner": lambda: miners.AngularMiner(angle=30),
    "BatchEasyHardMiner": lambda: miners.BatchEasyHardMiner(),
    "BatchEasyHardMiner(all)": lambda: miners.BatchEasyHardMiner(pos_strategy="all", neg_strategy="all"),
    "BatchHardMiner": lambda: miners.BatchHardMiner(),
    "DistanceWeightedMiner": lambda: miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4),
    "HDCMiner": lambda: miners.HDCMiner(filter_percentage=0.5),
    "MultiSimilarityMiner": lambda: miners.MultiSimilarityMiner(),
    "PairMarginMiner": lambda: miners.PairMarginMiner(),
    "TripletMarginMiner": lambda: miners.TripletMarginMiner(type_of_triplets="all"),
    "TripletMarginMiner(semihard)": lambda: miners.TripletMarginMiner(type_of_triplets="semihard"),
    "UniformHistogramMiner": lambda: miners.UniformHistogramMiner(num_bins=10, pos_per_bin=3, neg_per_bin=3),
}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def batches(draw, min_size=0):
    n = draw(st.integers(min_size, 12))
    d = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["single", "distinct", "few"]))
    if kind == "single":
        labels = [0] * n
    elif kind == "distinct":
        labels = list(range(n))
    else:
        labels = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    return n, d, labels, draw(st.integers(0, 2**16))


def make(n, d, labels, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return emb.to(dtype), torch.tensor(labels, dtype=torch.long)


def mine(name, emb, labels, ref=None, ref_labels=None):
    try:
        return FACTORIES[name]()(emb, labels, ref, ref_labels)
    except (ValueError, TypeError) as err:
        assert str(err), f"{name} raised {type(err).__name__} without a message"
        return None


def check_tuple(name, out, labels, ref_labels, same_set):
    n, m = len(labels), len(ref_labels)
    if len(out) == 3:
        a, p, neg = out
        assert len(a) == len(p) == len(neg)
        pairs = [(a, p, True), (a, neg, False)]
    else:
        a1, p, a2, neg = out
        assert len(a1) == len(p) and len(a2) == len(neg)
        pairs = [(a1, p, True), (a2, neg, False)]
    for anchors, others, positive in pairs:
        if len(anchors) == 0:
            continue
        assert anchors.dtype == torch.long and others.dtype == torch.long, f"{name}: indices not long"
        assert 0 <= anchors.min() and anchors.max() < n, f"{name}: anchor index out of range"
        assert 0 <= others.min() and others.max() < m, f"{name}: reference index out of range"
        same = labels[anchors] == ref_labels[others]
        assert bool(same.all() if positive else (~same).all()), f"{name}: wrong label relation"
        if positive and same_set:
            assert bool((anchors != others).all()), f"{name}: an anchor is its own positive"


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(batch=batches())
def test_mined_tuples_are_valid(name, dtype, batch):
    n, d, labels, seed = batch
    emb, labels = make(n, d, labels, seed, dtype)
    out = mine(name, emb, labels)
    if out is not None:
        check_tuple(name, out, labels, labels, same_set=True)


@pytest.mark.parametrize("name", list(FACTORIES))
@given(batch=batches(min_size=1), ref_size=st.integers(1, 8))
def test_mined_tuples_against_a_reference_set_are_valid(name, batch, ref_size):
    n, d, labels, seed = batch
    emb, labels = make(n, d, labels, seed, torch.float32)
    ref, ref_labels = make(ref_size, d, [i % 3 for i in range(ref_size)], seed + 1, torch.float32)
    out = mine(name, emb, labels, ref, ref_labels)
    if out is not None:
        check_tuple(name, out, labels, ref_labels, same_set=False)


def test_empty_batch_is_rejected_with_a_message():
    emb, labels = make(0, 4, [], 0, torch.float32)
    with pytest.raises(ValueError, match="empty"):
        miners.TripletMarginMiner()(emb, labels)
