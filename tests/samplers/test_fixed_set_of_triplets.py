from collections import Counter

import numpy as np
import pytest
import torch

from conftest import requires_reference
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


def test_state_dict_restores_the_triplets_and_their_order(monkeypatch):
    first = FixedSetOfTriplets([0, 0, 1, 1, 2, 2, 2], 15)
    list(first)
    state = first.state_dict()
    rng_state = c_f.NUMPY_RANDOM.get_state()
    expected = list(first)
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(99))  # other triplets
    second = FixedSetOfTriplets([0, 0, 1, 1, 2, 2, 2], 15)
    second.load_state_dict(state)
    c_f.NUMPY_RANDOM.set_state(rng_state)
    assert list(second) == expected
    with pytest.raises(ValueError, match=r"shape \(15, 3\)"):
        second.load_state_dict({"triplets": torch.zeros(4, 3, dtype=torch.long)})


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("container", ["list", "ndarray", "tensor"])
def test_triplets_and_stream_equal_the_reference(seed_both, seed, container):
    from pytorch_metric_learning.samplers import FixedSetOfTriplets as Reference

    rng = np.random.RandomState(200 + seed)
    labels = rng.randint(0, 9, size=70)
    labels[:2] = [50, 51]  # one-item classes: their "positive" is drawn with replacement
    given = {"list": labels.tolist(), "ndarray": labels, "tensor": torch.from_numpy(labels)}[container]
    seed_both(seed)
    theirs = Reference(given, num_triplets=400)
    ours = FixedSetOfTriplets(given, num_triplets=400)
    assert np.array_equal(ours.fixed_set_of_triplets, theirs.fixed_set_of_triplets)
    for _ in range(3):  # each iteration shuffles the rows in place
        assert list(ours) == list(theirs)
