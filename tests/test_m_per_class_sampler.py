from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from deepmetric.samplers import MPerClassSampler
from deepmetric.utils import common_functions as c_f
from deepmetric.utils.errors import ArgumentError

# 10 classes of 5 items (item i has class i % 10), plus one class with 2 items.
LABELS = [i % 10 for i in range(50)] + [10, 10]


@pytest.fixture(autouse=True)
def _seeded(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))


def test_every_batch_has_batch_size_over_m_classes_of_m(dtype):
    sampler = MPerClassSampler(torch.tensor(LABELS), m=4, batch_size=12, length_before_new_iter=1200)
    assert len(sampler) == 1200
    labels = np.array(LABELS)
    seen = Counter()
    batches = list(DataLoader(torch.arange(len(LABELS), dtype=dtype), batch_size=12, sampler=sampler))
    assert len(batches) == 100
    for batch in batches:
        counts = Counter(labels[batch.long().numpy()].tolist())
        assert sorted(counts.values()) == [4, 4, 4]
        seen.update(counts.keys())
    # Over 100 batches every class appears, about equally (300 class slots for 11 classes).
    assert set(seen) == set(range(11)) and min(seen.values()) > 10


def test_samples_within_a_class_are_distinct_when_the_class_is_big_enough():
    sampler = MPerClassSampler(LABELS, m=5, batch_size=10, length_before_new_iter=100)
    idx = list(sampler)
    labels = np.array(LABELS)
    for start in range(0, len(idx), 5):
        group = idx[start : start + 5]
        if labels[group[0]] != 10:  # class 10 has only 2 items: drawn with replacement
            assert len(set(group)) == 5


def test_without_batch_size_classes_come_in_groups_of_m():
    sampler = MPerClassSampler(LABELS, m=2, length_before_new_iter=100)
    # single pass = 2 * 11 = 22; 100 -> 88
    assert len(sampler) == 88
    idx = list(sampler)
    labels = np.array(LABELS)[idx]
    assert len(idx) == 88
    assert all(labels[i] == labels[i + 1] for i in range(0, 88, 2))


def test_short_length_yields_one_full_pass_as_the_reference():
    sampler = MPerClassSampler([0, 0, 1, 1, 2, 2, 3, 3], m=2, length_before_new_iter=5)
    assert len(sampler) == 5 and len(list(sampler)) == 8


def test_seeded_runs_are_reproducible(monkeypatch):
    def run(seed):
        monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(seed))
        return list(MPerClassSampler(LABELS, m=2, batch_size=8, length_before_new_iter=64))

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 10, "length_before_new_iter": 8}, r"length_before_new_iter \(8\) must be at least batch_size \(10\)"),
        ({"batch_size": 48}, r"m \* \(number of classes\) = 4 \* 11 = 44 must be at least batch_size \(48\)"),
        ({"batch_size": 10}, r"batch_size \(10\) must be a multiple of m \(4\)"),
    ],
)
def test_batch_size_constraints_are_checked_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MPerClassSampler(LABELS, m=4, **kwargs)
    with pytest.raises(AssertionError):  # code written against the reference keeps working
        MPerClassSampler(LABELS, m=4, **kwargs)


def test_replicas_get_disjoint_shares_of_the_same_epoch():
    def shares(epoch):
        out = []
        for rank in range(3):
            s = MPerClassSampler(LABELS, m=2, batch_size=4, length_before_new_iter=120, num_replicas=3, rank=rank, seed=7)
            s.set_epoch(epoch)
            out.append(list(s))
        return out

    ranks = shares(0)
    assert all(len(r) == 40 for r in ranks)
    full = MPerClassSampler(LABELS, m=2, batch_size=4, length_before_new_iter=120, num_replicas=3, rank=0, seed=7)
    assert len(full) == 40
    # The shares are whole batches of the common list: together they are the list's batches.
    rng_list = full._epoch_list(np.random.RandomState(7 + 0)).reshape(-1, 4)
    combined = sorted(tuple(b) for r in ranks for b in np.array(r).reshape(-1, 4).tolist())
    assert combined == sorted(tuple(b) for b in rng_list.tolist())
    # Each rank's batches keep the m-per-class structure.
    labels = np.array(LABELS)
    for r in ranks:
        for batch in np.array(r).reshape(-1, 4):
            assert sorted(Counter(labels[batch].tolist()).values()) == [2, 2]
    assert shares(0) == ranks and shares(1) != ranks


def test_replica_arguments_are_checked():
    with pytest.raises(ArgumentError, match="rank must be in"):
        MPerClassSampler(LABELS, m=2, num_replicas=2, rank=2)


def test_single_process_is_the_default():
    s = MPerClassSampler(LABELS, m=2)
    assert (s.num_replicas, s.rank) == (1, 0)
