"""TrainWithCachedBatches: the weights after a few epochs equal MetricLossOnly's (float64), with a
tuple miner too; dropout is replayed (one chunk per batch then draws exactly what the plain step
draws); a bad chunk size is named."""

import pytest
import torch

from deepmetric import losses, miners, trainers
from deepmetric.utils.errors import ArgumentError

DIM, EMB = 8, 4


def dataset(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(8)
    x = torch.randn(4, DIM, generator=g)[labels] * 3 + torch.randn(len(labels), DIM, generator=g)
    return torch.utils.data.TensorDataset(x.double(), labels)


def models(dropout=0.0):
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(DIM, 6), torch.nn.Tanh(), torch.nn.Dropout(dropout))
    return {"trunk": trunk.double(), "embedder": torch.nn.Linear(6, EMB).double()}


def train(cls, dropout=0.0, with_miner=False, **kwargs):
    m = models(dropout)
    trainer = cls(
        models=m,
        optimizers={f"{k}_optimizer": torch.optim.SGD(v.parameters(), lr=0.1) for k, v in m.items()},
        batch_size=16,
        loss_funcs={"metric_loss": losses.NTXentLoss(temperature=0.5)},
        mining_funcs={"tuple_miner": miners.MultiSimilarityMiner(epsilon=0.5)} if with_miner else None,
        dataset=dataset(),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        dtype=torch.float64,
        progress_bar=False,
        seed=3,
        **kwargs,
    )
    trainer.train(num_epochs=3)
    return [p.detach().clone() for v in m.values() for p in v.parameters()]


def assert_same_weights(got, want):
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 5, 16])
@pytest.mark.parametrize("with_miner", [False, True], ids=["labels", "miner"])
def test_training_equals_metric_loss_only(chunk_size, with_miner):
    got = train(trainers.TrainWithCachedBatches, with_miner=with_miner, chunk_size=chunk_size)
    want = train(trainers.MetricLossOnly, with_miner=with_miner)
    assert_same_weights(got, want)
    assert not torch.equal(want[0], models()["trunk"][0].weight)  # training moved the weights


def test_dropout_is_replayed():
    got = train(trainers.TrainWithCachedBatches, dropout=0.5, chunk_size=16)
    assert_same_weights(got, train(trainers.MetricLossOnly, dropout=0.5))


@pytest.mark.parametrize("bad", [0, 2.5, True, None])
def test_a_bad_chunk_size_is_named(bad):
    with pytest.raises(ArgumentError, match="chunk_size must be a positive int"):
        train(trainers.TrainWithCachedBatches, chunk_size=bad)
