import pytest
import torch

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.miners import DistanceWeightedMiner
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
