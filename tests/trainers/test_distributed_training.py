"""Trainers under torch.distributed: two gloo processes on CPU, each with half of every global
batch, end with the same weights as one process on the whole batches; a run whose rank 1 is
SIGKILLed mid-epoch resumes from rank 0's checkpoint to the same weights."""

import datetime
import os
import signal
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric import losses, miners, trainers

WORLD = 2
PER_RANK = 4  # each process's share of a global batch of 8
SAMPLES = 48
EPOCHS = 3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Data(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(SAMPLES, 6, generator=g, dtype=torch.float64)
        self.y = torch.arange(SAMPLES) % 4

    def __len__(self):
        return SAMPLES

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class _ShareOfGlobalBatches(torch.utils.data.Sampler):
    """Global batch b is rows [8b, 8b+8) in an epoch-dependent order; rank r reads its r-th half."""

    def __init__(self, rank, world):
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _order(self):
        return torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(self.epoch)).tolist()

    def __iter__(self):
        order, per = self._order(), PER_RANK * WORLD // self.world
        for b in range(0, SAMPLES, PER_RANK * WORLD):
            yield from order[b + self.rank * per : b + (self.rank + 1) * per]

    def __len__(self):
        return SAMPLES // self.world


CASES = {
    "contrastive_with_miner": lambda: (losses.ContrastiveLoss(), miners.PairMarginMiner(0.2, 0.8)),
    "trainable_loss": lambda: (losses.CosFaceLoss(4, 3), None),
}


def _train(case, rank, world, folder=None, resume=False, kill_at=None):
    torch.manual_seed(0)
    trunk = torch.nn.Linear(6, 3).double()
    loss, miner = CASES[case]()
    loss = loss.double()
    optimizers = {"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)}
    if any(True for _ in loss.parameters()):
        optimizers["metric_loss_optimizer"] = torch.optim.SGD(loss.parameters(), lr=0.1)

    def end_of_iteration(trainer):
        if kill_at == (trainer.epoch, trainer.iteration) and rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = trainers.MetricLossOnly(
        models={"trunk": trunk},
        optimizers=optimizers,
        batch_size=PER_RANK * WORLD // world,
        loss_funcs={"metric_loss": loss},
        mining_funcs={"tuple_miner": miner} if miner is not None else {},
        dataset=_Data(),
        sampler=_ShareOfGlobalBatches(rank, world),
        dataloader_num_workers=0,
        progress_bar=False,
        seed=5,
        checkpoint_folder=folder,
        resume=resume,
        end_of_iteration_hook=end_of_iteration,
    )
    trainer.train(num_epochs=EPOCHS)
    return {
        "trunk": trunk.state_dict(),
        "loss": loss.state_dict(),
        "logged": float(trainer.losses["total_loss"]),
    }


def _worker(rank, port, case, out, folder, resume, kill_at):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        result = _train(case, rank, WORLD, folder, resume, kill_at)
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _spawn(case, out, folder=None, resume=False, kill_at=None):
    # fork: the children need no fresh interpreter (importing torch again costs seconds each).
    args = (_free_port(), case, out, folder, resume, kill_at)
    mp.start_processes(_worker, args=args, nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_like_one_process_on_the_global_batch(tmp_path, case):
    single = _train(case, rank=0, world=1)
    ranks = _spawn(case, str(tmp_path / "out"))
    for result in ranks:
        for key in ("trunk", "loss"):
            for name, value in single[key].items():
                torch.testing.assert_close(result[key][name], value, rtol=1e-9, atol=1e-11)
    # The reported loss is the global batch's loss, not world_size times it.
    assert ranks[0]["logged"] == pytest.approx(single["logged"], rel=1e-9)


def test_killing_one_rank_mid_run_and_resuming_gives_the_uninterrupted_weights(tmp_path):
    case = "contrastive_with_miner"
    straight = _spawn(case, str(tmp_path / "straight"), folder=str(tmp_path / "ckpt_straight"))
    folder = str(tmp_path / "ckpt")
    with pytest.raises(mp.ProcessExitedException):
        _spawn(case, str(tmp_path / "killed"), folder=folder, kill_at=(2, 1))
    assert os.listdir(folder), "rank 0 wrote no checkpoint before the kill"
    resumed = _spawn(case, str(tmp_path / "resumed"), folder=folder, resume=True)
    for name, value in straight[0]["trunk"].items():
        torch.testing.assert_close(resumed[0]["trunk"][name], value, rtol=0, atol=0)
        torch.testing.assert_close(resumed[1]["trunk"][name], value, rtol=0, atol=0)


def test_distributed_true_without_a_process_group_is_rejected():
    with pytest.raises(ValueError, match="process group"):
        trainers.MetricLossOnly(
            models={"trunk": torch.nn.Linear(6, 3)},
            optimizers={},
            batch_size=4,
            loss_funcs={"metric_loss": losses.ContrastiveLoss()},
            dataset=_Data(),
            distributed=True,
        )
