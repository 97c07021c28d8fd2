from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import requires_reference
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


def test_replicas_get_disjoint_shares_of_the_same_epoch(monkeypatch):
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
    # The epoch list is what a fresh single-process sampler yields from RandomState(seed + epoch);
    # the shares are whole batches of it: together they are the list's batches.
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(7 + 0))
    epoch_list = np.array(list(MPerClassSampler(LABELS, m=2, batch_size=4, length_before_new_iter=120)))
    combined = sorted(tuple(b) for r in ranks for b in np.array(r).reshape(-1, 4).tolist())
    assert combined == sorted(tuple(b) for b in epoch_list.reshape(-1, 4).tolist())
    # Each rank's batches keep the m-per-class structure.
    labels = np.array(LABELS)
    for r in ranks:
        for batch in np.array(r).reshape(-1, 4):
            assert sorted(Counter(labels[batch].tolist()).values()) == [2, 2]
    assert shares(0) == ranks and shares(1) != ranks


def test_a_replica_epoch_does_not_depend_on_the_epochs_before_it():
    def sampler():
        return MPerClassSampler(LABELS, m=2, batch_size=4, length_before_new_iter=40, num_replicas=2, rank=1, seed=3)

    walked = sampler()
    for epoch in range(3):
        walked.set_epoch(epoch)
        list(walked)
    jumped = sampler()
    jumped.set_epoch(2)
    walked.set_epoch(2)
    assert list(walked) == list(jumped)


def test_state_dict_carries_the_class_order_to_a_new_sampler(monkeypatch):
    first = MPerClassSampler(LABELS, m=2, batch_size=8, length_before_new_iter=64)
    list(first)  # the in-place shuffles move the class order
    state = first.state_dict()
    assert sorted(state["label_order"]) == list(range(11)) and state["label_order"] != list(range(11))
    order = list(first.labels)
    rng_state = c_f.NUMPY_RANDOM.get_state()
    expected = list(first)
    second = MPerClassSampler(LABELS, m=2, batch_size=8, length_before_new_iter=64)
    second.load_state_dict(state)
    assert second.labels == order
    c_f.NUMPY_RANDOM.set_state(rng_state)
    assert list(second) == expected


def test_load_state_dict_rejects_an_order_of_the_wrong_classes():
    sampler = MPerClassSampler(LABELS, m=2)
    with pytest.raises(ArgumentError, match=r"permutation of range\(11\)"):
        sampler.load_state_dict({"label_order": [0, 1, 2]})


# -------------------------------------------------------------------------------------------
# The same c_f.NUMPY_RANDOM state gives the reference's index stream.

REFERENCE_CASES = {
    "batch_size": dict(m=4, batch_size=16, length_before_new_iter=160),
    "no_batch_size": dict(m=3, length_before_new_iter=100),
    "one_pass_longer_than_the_list": dict(m=20, length_before_new_iter=50),
    "one_batch": dict(m=8, batch_size=8, length_before_new_iter=8),
}


def _random_labels(seed, n=90, classes=12):
    rng = np.random.RandomState(1000 + seed)
    labels = rng.randint(0, classes, size=n)
    labels[:3] = [40, 41, 41]  # classes smaller than m: drawn with replacement
    return labels


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("container", ["list", "ndarray", "tensor"])
@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_index_stream_equals_the_reference(seed_both, seed, container, case):
    from pytorch_metric_learning.samplers import MPerClassSampler as Reference

    labels = _random_labels(seed)
    given = {"list": labels.tolist(), "ndarray": labels, "tensor": torch.from_numpy(labels)}[container]
    seed_both(seed)
    theirs = Reference(given, **REFERENCE_CASES[case])
    ours = MPerClassSampler(given, **REFERENCE_CASES[case])
    for _ in range(3):  # the class order carries over from one iteration to the next
        assert list(ours) == [int(i) for i in theirs]
    assert ours.labels == theirs.labels


@requires_reference
def test_a_dataloader_gets_the_reference_batches(seed_both):
    from pytorch_metric_learning.samplers import MPerClassSampler as Reference

    labels = _random_labels(5)
    data = torch.arange(len(labels))
    seed_both(5)
    loaders = [
        DataLoader(data, batch_size=12, sampler=cls(labels, m=3, batch_size=12, length_before_new_iter=120))
        for cls in (MPerClassSampler, Reference)
    ]
    for _ in range(2):
        ours, theirs = ([b.tolist() for b in loader] for loader in loaders)
        assert ours == theirs and len(ours) == 10


def test_replica_arguments_are_checked():
    with pytest.raises(ArgumentError, match="rank must be in"):
        MPerClassSampler(LABELS, m=2, num_replicas=2, rank=2)


def test_single_process_is_the_default():
    s = MPerClassSampler(LABELS, m=2)
    assert (s.num_replicas, s.rank) == (1, 0)
