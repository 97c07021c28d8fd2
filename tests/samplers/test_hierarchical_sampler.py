from collections import Counter

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric.samplers import HierarchicalSampler
from deepmetric.utils import common_functions as c_f


def _labels():
    # 3 super classes x 4 classes x 6 items; column 0 = class, column 1 = super class.
    rows = [(s * 4 + c, s) for s in range(3) for c in range(4) for _ in range(6)]
    return np.array(rows)


@pytest.fixture(autouse=True)
def _seeded(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))


def test_batches_mix_two_super_classes_with_samples_per_class():
    labels = _labels()
    sampler = HierarchicalSampler(torch.tensor(labels), batch_size=8, samples_per_class=2)
    assert len(sampler) == 3 * 4  # C(3, 2) super pairs x 4 batches
    for _ in range(20):
        batches = list(sampler)
        assert len(batches) == 12
        for batch in batches:
            assert len(batch) == 8
            supers = Counter(labels[batch, 1].tolist())
            assert len(supers) == 2 and set(supers.values()) == {4}
            assert set(Counter(labels[batch, 0].tolist()).values()) == {2}
            assert len(set(batch)) == 8


def test_every_super_pair_gets_its_batches():
    labels = _labels()
    batches = list(HierarchicalSampler(labels, batch_size=8, samples_per_class=4, batches_per_super_tuple=3))
    pairs = Counter(tuple(sorted(set(labels[b, 1].tolist()))) for b in batches)
    assert pairs == {(0, 1): 3, (0, 2): 3, (1, 2): 3}


def test_all_samples_of_a_class_when_they_fit():
    labels = _labels()
    batches = list(HierarchicalSampler(labels, batch_size=24, samples_per_class="all"))
    for batch in batches:
        # sub-batch of 12 fits two classes of 6
        assert set(Counter(labels[batch, 0].tolist()).values()) == {6}
        assert len(batch) == 24


def test_swapped_label_columns():
    labels = _labels()[:, ::-1].copy()
    batches = list(HierarchicalSampler(labels, 8, 2, inner_label=1, outer_label=0))
    assert all(len(set(labels[b, 0].tolist())) == 2 for b in batches)


def test_batches_change_between_epochs():
    sampler = HierarchicalSampler(_labels(), 8, 2)
    assert list(sampler) != list(sampler)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 9, "samples_per_class": 1}, r"batch_size \(9\) must be a multiple of super_classes_per_batch \(2\)"),
        ({"batch_size": 8, "samples_per_class": 3}, r"= 4 must be a multiple of samples_per_class \(3\)"),
        ({"batch_size": 8, "samples_per_class": 0}, "samples_per_class must be positive"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HierarchicalSampler(_labels(), **kwargs)


def test_one_dimensional_labels_are_rejected():
    with pytest.raises(ValueError, match="2-D"):
        HierarchicalSampler(np.arange(10), 4, 2)


def test_seeded_runs_are_reproducible(monkeypatch):
    def run(seed):
        monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(seed))
        return list(HierarchicalSampler(_labels(), 8, 2))

    assert run(1) == run(1) and run(1) != run(2)


def test_is_a_batch_sampler_for_dataloaders():
    sampler = HierarchicalSampler(_labels(), batch_size=8, samples_per_class=2)
    assert isinstance(sampler, torch.utils.data.BatchSampler)
    loader = torch.utils.data.DataLoader(torch.arange(len(_labels())), batch_sampler=sampler)
    batches = [b.tolist() for b in loader]
    assert len(batches) == len(sampler) == 12 and all(len(b) == 8 for b in batches)


# -------------------------------------------------------------------------------------------
# The same c_f.NUMPY_RANDOM state gives the reference's batches.


def _random_hierarchy(seed, n=240):
    rng = np.random.RandomState(seed)
    # Super labels whose set order is not their sorted order: the combinations follow the set.
    supers = rng.choice([1000, 3, 40, -2, 17, 9], size=n)
    classes = supers * 10 + rng.randint(0, 5, size=n)
    return np.stack([classes, supers], axis=1)


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=8, samples_per_class=2),
        dict(batch_size=16, samples_per_class=4, batches_per_super_tuple=2),
        dict(batch_size=12, samples_per_class="all", super_classes_per_batch=3),
        dict(batch_size=12, samples_per_class=2, super_classes_per_batch=3, inner_label=1, outer_label=0),
    ],
)
def test_batches_equal_the_reference(seed_both, seed, kwargs):
    from pytorch_metric_learning.samplers import HierarchicalSampler as Reference

    labels = _random_hierarchy(seed)
    if kwargs.get("outer_label") == 0:
        labels = labels[:, ::-1].copy()
    supers = labels[:, kwargs.get("outer_label", 1)]
    assert list(set(supers)) != sorted(set(supers))
    seed_both(seed)
    theirs = Reference(labels, **kwargs)  # the first draw happens at construction
    ours = HierarchicalSampler(torch.from_numpy(labels), **kwargs)
    assert ours.super_pairs == theirs.super_pairs
    assert ours.batches == [[int(i) for i in b] for b in theirs.batches]
    for _ in range(3):
        assert list(ours) == [[int(i) for i in b] for b in theirs]
    assert len(ours) == len(theirs)
