"""Running the ``deepmetric`` command under torchrun: one process per rank, one shared run folder.

torchrun sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and the rendezvous address; the command then
joins the process group (gloo on CPU, nccl on CUDA, where each process takes GPU ``LOCAL_RANK``).
``batch_size`` in the config stays the global batch: each process takes ``batch_size / N`` rows of
it. The trainer does the rest (see ``deepmetric/trainers/distributed_training.py``). Every process
evaluates; only rank 0 writes files.
"""

import os

import torch
import torch.distributed as dist

from ..trainers.distributed_training import is_main_process  # noqa: F401 (the CLI's one import point)
from .config import ConfigError


def world_size_from_environment():
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_process_group(config):
    """Initialise the process group torchrun asked for; returns the device this process uses."""
    device = torch.device(config["device"])
    if world_size_from_environment() <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def per_process_batch_size(config):
    world = dist.get_world_size() if dist.is_initialized() else 1
    batch = config["batch_size"]
    if batch % world:
        raise ConfigError(
            "batch_size", f"must be divisible by the number of processes ({world}), got {batch}"
        )
    return batch // world


def leave_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()
