"""label_relation and multi-hot labels in every miner: equality as a relation mines exactly the
default tuples (the same draws for a seed); a coarser relation mines exactly what the default
mines on the coarser labels; one-hot labels mine what their class indices mine; a relation
returning the wrong answer, and labels of mismatched widths, are named in a ValueError."""

import pytest
import torch

from deepmetric import miners
from deepmetric.miners.batch_easy_hard_miner import BatchEasyHardMiner

N, D = 16, 6

MINERS = {
    "AngularMiner": lambda **kw: miners.AngularMiner(angle=30, **kw),
    "BatchEasyHardMiner": lambda **kw: miners.BatchEasyHardMiner(**kw),
    "BatchEasyHardMiner(all,hard)": lambda **kw: miners.BatchEasyHardMiner(
        pos_strategy=BatchEasyHardMiner.ALL, neg_strategy=BatchEasyHardMiner.HARD, **kw),
    "BatchHardMiner": lambda **kw: miners.BatchHardMiner(**kw),
    "DistanceWeightedMiner": lambda **kw: miners.DistanceWeightedMiner(cutoff=0.5, **kw),
    "HDCMiner": lambda **kw: miners.HDCMiner(filter_percentage=0.5, **kw),
    "MultiSimilarityMiner": lambda **kw: miners.MultiSimilarityMiner(epsilon=0.1, **kw),
    "PairMarginMiner": lambda **kw: miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9, **kw),
    "TripletMarginMiner(all)": lambda **kw: miners.TripletMarginMiner(margin=0.5, **kw),
    "TripletMarginMiner(semihard)": lambda **kw: miners.TripletMarginMiner(
        margin=0.5, type_of_triplets="semihard", **kw),
    "UniformHistogramMiner": lambda **kw: miners.UniformHistogramMiner(
        num_bins=8, pos_per_bin=3, neg_per_bin=3, **kw),
}
# Draws one class at a time: under a coarser relation its classes are the distinct fine labels,
# so its draws differ from the default's on coarse labels (checked for validity instead).
DRAWS_PER_LABEL_VALUE = {"DistanceWeightedMiner"}


def equal(a, b):
    return a.unsqueeze(1) == b.unsqueeze(0)


def same_pair_of_classes(a, b):
    return (a // 2).unsqueeze(1) == (b // 2).unsqueeze(0)


def batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=dtype), torch.arange(N) % 8


def mine(miner, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    return miner(*args, **kwargs)


def assert_same_tuples(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a, b), (a, b)


@pytest.mark.parametrize("name", list(MINERS))
def test_equality_as_a_relation_mines_the_default_tuples(name, dtype):
    make = MINERS[name]
    emb, labels = batch(dtype)
    assert_same_tuples(mine(make(label_relation=equal), emb, labels), mine(make(), emb, labels))
    ref, ref_labels = batch(dtype, seed=1)
    assert_same_tuples(mine(make(label_relation=equal), emb, labels, ref, ref_labels),
                       mine(make(), emb, labels, ref, ref_labels))


@pytest.mark.parametrize("name", sorted(set(MINERS) - DRAWS_PER_LABEL_VALUE))
def test_a_coarser_relation_mines_the_default_on_the_coarser_labels(name, dtype):
    make = MINERS[name]
    emb, labels = batch(dtype)
    got = mine(make(label_relation=same_pair_of_classes), emb, labels)
    assert_same_tuples(got, mine(make(), emb, labels // 2))
    ref, ref_labels = batch(dtype, seed=1)
    got = mine(make(label_relation=same_pair_of_classes), emb, labels, ref, ref_labels)
    assert_same_tuples(got, mine(make(), emb, labels // 2, ref, ref_labels // 2))


def test_distance_weighted_draws_follow_a_coarser_relation():
    emb, labels = batch()
    a, p, n = mine(miners.DistanceWeightedMiner(cutoff=0.5, label_relation=same_pair_of_classes),
                   emb, labels)
    related = same_pair_of_classes(labels, labels)
    assert len(a) > 0
    assert bool(related[a, p].all()) and not bool(related[a, n].any()) and bool((a != p).all())
    # Every anchor's positives now include the other fine class of its pair.
    assert bool((labels[a] != labels[p]).any())


@pytest.mark.parametrize("name", list(MINERS))
def test_one_hot_labels_mine_the_class_indices_tuples(name):
    make = MINERS[name]
    emb, labels = batch()
    one_hot = torch.nn.functional.one_hot(labels, 8)
    assert_same_tuples(mine(make(), emb, one_hot), mine(make(), emb, labels))


def test_overlapping_multi_hot_labels_decide_pairs_by_a_shared_class():
    emb, _ = batch()
    labels = torch.zeros(N, 3, dtype=torch.long)
    labels[torch.arange(N), torch.arange(N) % 3] = 1
    labels[0, :] = 1  # row 0 shares a class with every row
    a1, p, a2, n = miners.PairMarginMiner(pos_margin=0, neg_margin=100)(emb, labels)
    assert set(p[a1 == 0].tolist()) == set(range(1, N))
    assert 0 not in n.tolist() and 0 not in a2.tolist()
    shared = (labels @ labels.T) > 0
    assert bool(shared[a1, p].all()) and not bool(shared[a2, n].any())


@pytest.mark.parametrize(
    "relation,match",
    [
        (lambda a, b: equal(a, b).float(), "torch.bool"),
        (lambda a, b: equal(a, b)[:-1], r"shape \(16, 16\)"),
    ],
    ids=["float", "wrong-shape"],
)
@pytest.mark.parametrize("name", ["TripletMarginMiner(all)", "DistanceWeightedMiner", "HDCMiner"])
def test_a_relation_giving_the_wrong_answer_is_named(name, relation, match):
    emb, labels = batch()
    with pytest.raises(ValueError, match=f"label_relation must return.*{match}"):
        MINERS[name](label_relation=relation)(emb, labels)


def test_a_miner_relation_must_be_callable():
    with pytest.raises(TypeError, match="label_relation must be a function"):
        miners.PairMarginMiner(label_relation=1)


def test_miner_labels_of_different_widths_are_rejected():
    emb, labels = batch()
    one_hot = torch.nn.functional.one_hot(labels, 8)
    with pytest.raises(ValueError, match="same width"):
        miners.PairMarginMiner()(emb, one_hot, emb, one_hot[:, :5])
    with pytest.raises(ValueError, match="same width"):
        miners.PairMarginMiner()(emb, one_hot, emb, labels)
