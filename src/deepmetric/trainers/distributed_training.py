"""What a trainer does differently under ``torch.distributed`` (for example launched by torchrun).

Each process trains on its own share of every global batch:
* models with trainable parameters are wrapped in ``DistributedDataParallel`` (gradients averaged
  over processes);
* metric losses and tuple miners are wrapped in :class:`DistributedLossWrapper` /
  :class:`DistributedMinerWrapper`, so pairs and triplets are formed across the whole global
  batch. The wrapped loss is scaled by the world size so that DDP's averaging yields exactly the
  gradient of single-process training on the concatenated batch; the trainer reports the unscaled
  value, so ``trainer.losses`` reads the same as in a single process;
* a loss with its own parameters (proxies, class weights) sees the whole global batch in every
  process, so each process already holds the full gradient for them: it is divided by the world
  size to undo the scaling, and stays identical in every process;
* only rank 0 writes checkpoints and shows a progress bar; every process resumes from them.
"""

import torch
import torch.distributed as dist

from ..distributed import DistributedLossWrapper, DistributedMinerWrapper, is_distributed
from ..losses import BaseMetricLossFunction


def active():
    """True inside an initialised process group of more than one process."""
    return is_distributed() and dist.get_world_size() > 1


def is_main_process():
    return not active() or dist.get_rank() == 0


def barrier():
    if active():
        dist.barrier()


def wrap_for_distributed(trainer):
    """Wrap ``trainer``'s models, metric losses and tuple miner in place (idempotent)."""
    world = dist.get_world_size()
    device = torch.device(trainer.data_device)
    for name, model in list(trainer.models.items()):
        trainable = any(p.requires_grad for p in model.parameters())
        if trainable and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            device_ids = [device] if device.type == "cuda" else None
            trainer.models[name] = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    for name, loss in list(trainer.loss_funcs.items()):
        if isinstance(loss, BaseMetricLossFunction) or type(loss).__name__ == "CrossBatchMemory":
            trainer.loss_funcs[name] = GlobalBatchLoss(loss, world)
    for name in ("tuple_miner",):
        miner = trainer.mining_funcs.get(name)
        if miner is not None and not isinstance(miner, DistributedMinerWrapper):
            trainer.mining_funcs[name] = DistributedMinerWrapper(miner)


class GlobalBatchLoss(torch.nn.Module):
    """A metric loss over the global batch whose value is the loss itself and whose gradient is
    ``world_size`` times it (see the module docstring)."""

    def __init__(self, loss, world_size):
        super().__init__()
        self.wrapped = DistributedLossWrapper(loss)
        self.loss = loss
        self.world_size = world_size

    def forward(self, *args, **kwargs):
        scaled = self.wrapped(*args, **kwargs)
        return scaled.detach() / self.world_size + (scaled - scaled.detach())

    def state_dict(self, *args, **kwargs):
        return self.loss.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.loss.load_state_dict(*args, **kwargs)


def correct_loss_parameter_grads(trainer):
    """Undo the world-size scaling on the parameters of losses (identical in every process)."""
    for loss in trainer.loss_funcs.values():
        if isinstance(loss, GlobalBatchLoss):
            for p in loss.loss.parameters():
                if p.grad is not None:
                    p.grad.div_(loss.world_size)


def unwrap(obj):
    """The user's own object inside any distributed wrapper."""
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    if isinstance(obj, GlobalBatchLoss):
        return obj.loss
    if isinstance(obj, DistributedMinerWrapper):
        return obj.miner
    return obj


def mean_over_processes(values):
    """``values`` (a dict of numbers) averaged over all processes, for logging."""
    if not active() or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.tolist()))
