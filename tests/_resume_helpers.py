"""A small training setup with every kind of state (models, optimizers, schedulers, a loss with
a parameter and a buffer, a miner) for the checkpoint and resume tests; also imported by the
child processes those tests kill."""

import torch

from deepmetric import losses, miners, trainers
from deepmetric.samplers import MPerClassSampler

DIM = 8


def dataset(n_per_class=8, classes=4):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, DIM, generator=g) * 2
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = centers[labels] + torch.randn(len(labels), DIM, generator=g)
    return torch.utils.data.TensorDataset(x, labels)


class ProxyLoss(torch.nn.Module):
    """A loss with a learnable parameter and a running buffer, like proxy losses and memories."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.register_buffer("seen", torch.zeros(()))
        self.inner = losses.TripletMarginLoss(margin=0.5)

    def forward(self, embeddings, labels, indices_tuple=None):
        self.seen += len(embeddings)
        return self.scale * self.inner(embeddings, labels, indices_tuple) + 0.01 * self.seen.sqrt()


def build(variant, folder=None, resume=False, init_seed=0, **extra):
    torch.manual_seed(init_seed)
    models = {"trunk": torch.nn.Sequential(torch.nn.Linear(DIM, 6), torch.nn.Dropout(0.2)),
              "embedder": torch.nn.Linear(6, 4)}
    loss = ProxyLoss()
    optimizers = {
        "trunk_optimizer": torch.optim.Adam(models["trunk"].parameters(), lr=0.01),
        "embedder_optimizer": torch.optim.SGD(models["embedder"].parameters(), lr=0.05, momentum=0.9),
        "metric_loss_optimizer": torch.optim.SGD(loss.parameters(), lr=0.01),
    }
    schedulers = {
        "trunk_scheduler_by_epoch": torch.optim.lr_scheduler.StepLR(optimizers["trunk_optimizer"], 1, 0.7),
        "embedder_scheduler_by_iteration": torch.optim.lr_scheduler.ExponentialLR(
            optimizers["embedder_optimizer"], 0.97
        ),
    }
    kwargs = dict(
        models=models,
        optimizers=optimizers,
        batch_size=8,
        loss_funcs={"metric_loss": loss},
        mining_funcs={"tuple_miner": miners.TripletMarginMiner(margin=0.5, type_of_triplets="all")},
        dataset=dataset(),
        lr_schedulers=schedulers,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        progress_bar=False,
        checkpoint_folder=folder,
        resume=resume,
    )
    if variant == "seeded":
        kwargs["seed"] = 3
    elif variant == "m_per_class_unseeded":
        ds = kwargs["dataset"]
        kwargs["sampler"] = MPerClassSampler(ds.tensors[1], m=2, batch_size=8, length_before_new_iter=32)
        kwargs["iterations_per_epoch"] = 3  # passes of 4 batches: epochs end mid-pass
    elif variant == "shuffle_unseeded_uneven":
        kwargs["iterations_per_epoch"] = 5
    elif variant == "workers":
        kwargs["seed"] = 4
        kwargs["dataloader_num_workers"] = 1
        kwargs["iterations_per_epoch"] = 3
    kwargs.update(extra)
    return trainers.MetricLossOnly(**kwargs)


def weights(trainer):
    out = {f"model.{k}.{n}": p.detach().clone() for k, m in trainer.models.items() for n, p in m.state_dict().items()}
    out.update({f"loss.{n}": p.detach().clone() for n, p in trainer.loss_funcs["metric_loss"].state_dict().items()})
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
