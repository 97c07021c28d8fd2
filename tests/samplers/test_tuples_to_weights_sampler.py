import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import requires_reference
from deepmetric.miners import BaseMiner
from deepmetric.samplers import TuplesToWeightsSampler
from deepmetric.samplers.tuples_to_weights_sampler import embed_dataset
from deepmetric.utils import common_functions as c_f


class _PicksItem(BaseMiner):
    """Returns the triplet (k, k, k) for the batch position k: only that item gets weight."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        t = torch.tensor([self.k])
        return t, t, t


def _dataset(n=12):
    return TensorDataset(torch.randn(n, 3), torch.arange(n) % 3)


def test_embed_dataset_uses_eval_mode_and_restores_training():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.9))
    model.train()
    data = _dataset()
    emb, labels = embed_dataset(model, data, 5, 0, "cpu")
    assert model.training
    expected = model[0](data.tensors[0]).detach()
    torch.testing.assert_close(emb, expected)  # dropout off
    assert labels.tolist() == data.tensors[1].tolist() and not emb.requires_grad


def test_samples_only_items_the_miner_picks():
    sampler = TuplesToWeightsSampler(torch.nn.Linear(3, 2), _PicksItem(4), _dataset(), batch_size=5, dataloader_num_workers=0, data_device="cpu")
    assert len(sampler) == 12
    drawn = list(sampler)
    assert len(drawn) == 12 and set(drawn) == {4}
    assert sampler.weights[4] == 1 and sampler.weights.sum() == 1


def test_subset_maps_miner_positions_back_to_dataset_indices(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    sampler = TuplesToWeightsSampler(torch.nn.Linear(3, 2), _PicksItem(0), _dataset(), subset_size=5, dataloader_num_workers=0, data_device="cpu")
    assert len(sampler) == 5
    drawn = list(sampler)
    np.random.RandomState(0)  # the subset drawn by the sampler:
    subset = np.random.RandomState(0).choice(np.arange(12), size=5, replace=False)
    assert set(drawn) == {int(subset[0])}
    assert len(drawn) == 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_miner_weights_are_counts_over_max(dtype):
    from deepmetric.miners import BatchHardMiner

    model = torch.nn.Linear(3, 2).to(dtype)
    data = TensorDataset(torch.randn(12, 3, dtype=dtype), torch.arange(12) % 3)
    sampler = TuplesToWeightsSampler(model, BatchHardMiner(), data, dataloader_num_workers=0, data_device="cpu")
    list(sampler)
    assert float(sampler.weights.max()) == 1.0 and float(sampler.weights.min()) >= 0


def test_the_miner_sees_normalised_embeddings_unless_told_otherwise():
    seen = []

    class Records(_PicksItem):
        def mine(self, embeddings, labels, ref_emb, ref_labels):
            seen.append(embeddings.norm(dim=1))
            return super().mine(embeddings, labels, ref_emb, ref_labels)

    model = torch.nn.Linear(3, 2)
    for normalize in (True, False):
        kwargs = {} if normalize else {"normalize_embeddings": False}
        list(TuplesToWeightsSampler(model, Records(0), _dataset(), dataloader_num_workers=0, data_device="cpu", **kwargs))
    torch.testing.assert_close(seen[0], torch.ones(12))
    assert not torch.allclose(seen[1], torch.ones(12))


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("subset_size", [None, 20, 50])
def test_stream_equals_the_reference(seed_both, seed, subset_size):
    from pytorch_metric_learning import distances as ref_distances
    from pytorch_metric_learning import miners as ref_miners
    from pytorch_metric_learning.samplers import TuplesToWeightsSampler as Reference

    from deepmetric.distances import LpDistance
    from deepmetric.miners import TripletMarginMiner

    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g))
    model = torch.nn.Linear(6, 4)
    kwargs = dict(subset_size=subset_size, batch_size=16, dataloader_num_workers=0, data_device="cpu")
    seed_both(seed)
    # A distance without normalisation sees whether the tester normalised the embeddings.
    their_distance = ref_distances.LpDistance(normalize_embeddings=False)
    their_miner = ref_miners.TripletMarginMiner(0.3, distance=their_distance, type_of_triplets="semihard")
    theirs = Reference(model, their_miner, data, **kwargs)
    our_miner = TripletMarginMiner(0.3, distance=LpDistance(normalize_embeddings=False), type_of_triplets="semihard")
    ours = TuplesToWeightsSampler(model, our_miner, data, **kwargs)
    for _ in range(2):
        torch.manual_seed(seed)
        expected = list(theirs)
        model.train()  # the reference leaves the model in eval mode
        torch.manual_seed(seed)
        assert list(ours) == expected
        assert torch.equal(ours.weights, theirs.weights) and int((ours.weights > 0).sum()) > 1
