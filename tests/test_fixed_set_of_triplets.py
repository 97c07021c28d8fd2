from collections import Counter

import numpy as np
import pytest
import torch

from deepmetric.samplers import FixedSetOfTriplets
from deepmetric.utils import common_functions as c_f


@pytest.fixture(autouse=True)
def _seeded(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))


def test_triplets_have_anchor_class_positive_and_other_class_negative():
    labels = np.array([0, 0, 0, 1, 1, 2, 3])  # classes 2 and 3 have one item
    sampler = FixedSetOfTriplets(torch.tensor(labels), num_triplets=2000)
    t = sampler.fixed_set_of_triplets
    assert t.shape == (2000, 3)
    assert (labels[t[:, 0]] == labels[t[:, 1]]).all()
    assert (labels[t[:, 0]] != labels[t[:, 2]]).all()
    big = labels[t[:, 0]] <= 1
    assert (t[big, 0] != t[big, 1]).all()  # two distinct items when the class has two or more
    assert (t[~big, 0] == t[~big, 1]).all()  # the single item twice otherwise
    # anchor classes and negative classes are uniform over the 4 classes
    anchor_counts = Counter(labels[t[:, 0]].tolist())
    assert set(anchor_counts) == {0, 1, 2, 3} and min(anchor_counts.values()) > 400
    assert min(Counter(labels[t[:, 2]].tolist()).values()) > 400


def test_iteration_yields_shuffled_flat_triplets():
    labels = [0, 0, 1, 1, 2, 2]
    sampler = FixedSetOfTriplets(labels, num_triplets=10)
    assert len(sampler) == 30
    rows_before = sorted(map(tuple, sampler.fixed_set_of_triplets.tolist()))
    flat = list(sampler)
    rows_after = sorted(tuple(flat[i : i + 3]) for i in range(0, 30, 3))
    assert rows_after == rows_before  # same set of triplets, every epoch


def test_needs_positive_count_and_two_classes():
    with pytest.raises(AssertionError, match="num_triplets must be positive"):
        FixedSetOfTriplets([0, 1], 0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        FixedSetOfTriplets([0, 0, 0], 5)


def test_create_is_reproducible_with_the_same_seed(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(5))
    a = FixedSetOfTriplets([0, 0, 1, 1, 2], 20).fixed_set_of_triplets.copy()
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(5))
    b = FixedSetOfTriplets([0, 0, 1, 1, 2], 20).fixed_set_of_triplets
    assert (a == b).all()
