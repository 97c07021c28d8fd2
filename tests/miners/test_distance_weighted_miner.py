import pytest
import torch
from _miner_helpers import reference_miner

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.miners import DistanceWeightedMiner
from deepmetric.utils import loss_and_miner_utils as lmu
from deepmetric.utils.errors import ArgumentError


def _batch(dtype, n=24, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.arange(n) % 4


def test_triplets_are_valid_and_sized_by_class(dtype):
    emb, labels = _batch(dtype)
    torch.manual_seed(0)
    a, p, n = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=2.0)(emb, labels)
    assert bool((labels[a] == labels[p]).all()) and bool((a != p).all())
    assert bool((labels[a] != labels[n]).all())
    # each of the 24 anchors gets as many triplets as its class has members (6)
    assert len(a) == 24 * 6


def test_negatives_beyond_nonzero_loss_cutoff_are_never_drawn():
    emb, labels = _batch(torch.float64)
    miner = DistanceWeightedMiner(nonzero_loss_cutoff=1.0)
    torch.manual_seed(0)
    a, _p, n = miner(emb, labels)
    d = miner.distance(emb)[a, n]
    assert len(a) > 0 and bool((d < 1.0).all())


def test_closer_negatives_are_more_likely_in_low_dimension():
    # In 2-D, w ~ d^0 * (1 - d^2/4)^(1/2): weights fall as d grows, so a negative at a small
    # distance is drawn more often than one across the circle.
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.6, 0.8], [-1.0, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    torch.manual_seed(0)
    counts = torch.zeros(4)
    miner = DistanceWeightedMiner(cutoff=0.1, nonzero_loss_cutoff=2.1)
    for _ in range(200):
        a, _p, n = miner(emb, labels)
        counts += torch.bincount(n[a == 0], minlength=4)
    assert counts[2] > counts[3]


def test_one_class_gives_no_triplets():
    a, _p, _n = DistanceWeightedMiner()(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    assert len(a) == 0


def test_hyperparameters_recorded_as_floats():
    miner = DistanceWeightedMiner(cutoff=1, nonzero_loss_cutoff=2)
    assert miner.cutoff == 1.0 and isinstance(miner.cutoff, float)
    assert {"cutoff", "nonzero_loss_cutoff"} <= set(miner._record_these)


@pytest.mark.parametrize("distance", [CosineSimilarity(), LpDistance(power=2)])
def test_other_distances_are_rejected(distance):
    with pytest.raises(ArgumentError, match="DistanceWeightedMiner requires"):
        DistanceWeightedMiner(distance=distance)


def test_sampler_follows_the_weights_and_excludes_the_anchor():
    labels = torch.tensor([0, 0, 0, 1, 1])
    weights = torch.zeros(5, 5)
    weights[:3, 3], weights[:3, 4] = 0.25, 0.75  # class-0 anchors: negative 4 three times as likely
    torch.manual_seed(0)
    a_all, p_all, n_all = [], [], []
    for _ in range(400):
        a, p, n = lmu.get_random_triplet_indices(labels, labels, weights=weights)
        a_all.append(a), p_all.append(p), n_all.append(n)
    a, p, n = torch.cat(a_all), torch.cat(p_all), torch.cat(n_all)
    # Rows 3 and 4 have zero weights: no triplets. Rows 0-2: 3 triplets each (class size).
    assert set(a.tolist()) == {0, 1, 2} and len(a) == 400 * 9
    assert bool((a != p).all()) and bool((labels[p] == 0).all())
    assert abs(float((n == 4).float().mean()) - 0.75) < 0.03
    # Positives uniform over the two other members: about half each for anchor 0.
    assert abs(float((p[a == 0] == 1).float().mean()) - 0.5) < 0.05


def test_sampler_with_a_separate_reference_set():
    labels, ref_labels = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1, 0])
    weights = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.float32) / 2
    a, p, n = lmu.get_random_triplet_indices(labels, ref_labels, weights=weights)
    # anchor 0: 2 members of class 0 in the reference; anchor 1: 2; anchor 2 has no positive.
    assert sorted(a.tolist()) == [0, 0, 1, 1]
    assert bool((labels[a] == ref_labels[p]).all()) and bool((labels[a] != ref_labels[n]).all())


def test_an_anchor_whose_negatives_are_all_beyond_the_cutoff_gets_no_triplet():
    # Anchor 2 (class 1) is at distance 2 from every class-0 item: weight 0, no triplet.
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    torch.manual_seed(0)
    a, _p, _n = DistanceWeightedMiner(cutoff=0.1, nonzero_loss_cutoff=1.9)(emb, labels)
    assert 2 not in a.tolist() and len(a) > 0


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("with_ref", [False, True], ids=["same_set", "ref_set"])
def test_triplets_equal_the_reference_under_the_same_seed(dtype, seed, with_ref):
    g = torch.Generator().manual_seed(seed)
    emb, labels = torch.randn(48, 8, generator=g, dtype=dtype), torch.randint(0, 6, (48,), generator=g)
    args = (emb, labels)
    if with_ref:
        args += (torch.randn(30, 8, generator=g, dtype=dtype), torch.randint(0, 6, (30,), generator=g))
    kwargs = dict(cutoff=0.5, nonzero_loss_cutoff=1.3 + 0.1 * seed)
    torch.manual_seed(seed)
    theirs = reference_miner("DistanceWeightedMiner", **kwargs)(*args)
    after_theirs = torch.rand(4)
    torch.manual_seed(seed)
    ours = DistanceWeightedMiner(**kwargs)(*args)
    assert len(ours[0]) > 0
    for x, y in zip(ours, theirs):
        assert torch.equal(x, y)
    assert torch.equal(torch.rand(4), after_theirs)  # the same number of draws
