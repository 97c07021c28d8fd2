"""Running the ``deepmetric`` command under torchrun: one process per rank, one shared run folder.

torchrun sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and the rendezvous address; the command then
joins the process group (gloo on CPU, nccl on CUDA, where each process takes GPU ``LOCAL_RANK``).
``batch_size`` in the config is the global batch: the sampler draws global batches exactly as in
one process, and each of the N processes takes its ``batch_size / N`` rows of every one of them
(:class:`GlobalBatches`), so class-balanced batches stay balanced whatever N is. The trainer does
the rest (see ``deepmetric/trainers/distributed_training.py``). Every process evaluates; only
rank 0 writes files.
"""

import os
import random

import numpy as np
import torch

from .config import ConfigError


def world_size_from_environment():
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_process_group(device):
    """Initialise the process group torchrun asked for; returns the device this process uses."""
    import torch.distributed as dist

    if world_size_from_environment() <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def world_and_rank():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def is_main_process():
    return world_and_rank()[1] == 0


def per_process_batch_size(batch_size):
    """``batch_size / N`` under N processes; a ConfigError naming both numbers when N does not
    divide it."""
    world, _ = world_and_rank()
    if batch_size % world:
        raise ConfigError(
            "batch_size",
            f"the global batch of {batch_size} cannot be split evenly over {world} processes; "
            f"use a multiple of {world}",
        )
    return batch_size // world


def leave_process_group():
    import sys

    dist = sys.modules.get("torch.distributed")  # never import torch just to leave
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatches(torch.utils.data.Sampler):
    """This process's share of every global batch drawn by ``sampler``.

    ``sampler`` yields dataset indices in consecutive global batches of ``global_batch_size``
    (an index sampler such as ``MPerClassSampler``) or yields the batches as lists (a batch sampler
    such as ``HierarchicalSampler``, whose short batches are filled up with repeats of their own
    items). Each pass draws its global batches with every random generator seeded from
    ``(seed, epoch)`` — the same in every process, whatever else used those generators — and
    process ``rank`` of ``world_size`` yields rows ``[rank * b, (rank + 1) * b)`` of each, with
    ``b = global_batch_size / world_size``. With one process it yields the global batches whole.

    A sampler that carries state from pass to pass (``MPerClassSampler`` shuffles its class
    order in place) is put back in its first state before every pass, so that a pass depends on
    ``(seed, epoch)`` alone and a resumed run draws what an uninterrupted one draws.

    The trainer calls :meth:`set_epoch` before every pass.
    """

    def __init__(self, sampler, global_batch_size, seed, world_size=1, rank=0):
        if global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} is not a multiple of {world_size}")
        self.sampler = sampler
        self.global_batch_size = global_batch_size
        self.share = global_batch_size // world_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.epoch = 0
        self._num_batches = None
        self._first_state = sampler.state_dict() if hasattr(sampler, "state_dict") else None

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def global_batches(self):
        """The pass's global batches, ``(num_batches, global_batch_size)``."""
        if self._first_state is not None:
            self.sampler.load_state_dict(self._first_state)
        with _seeded_generators(self.seed * 1_000_003 + self.epoch):
            drawn = list(iter(self.sampler))
            if drawn and isinstance(drawn[0], (list, tuple, np.ndarray)):
                batches = [self._filled(list(b)) for b in drawn if len(b) > 0]
            else:
                usable = len(drawn) // self.global_batch_size * self.global_batch_size
                flat = np.asarray(drawn[:usable], dtype=np.int64)
                batches = flat.reshape(-1, self.global_batch_size) if usable else []
        return np.asarray(batches, dtype=np.int64).reshape(-1, self.global_batch_size)

    def _filled(self, batch):
        if len(batch) >= self.global_batch_size:
            return batch[: self.global_batch_size]
        extra = np.random.choice(len(batch), size=self.global_batch_size - len(batch))
        return batch + [batch[i] for i in extra]

    def __iter__(self):
        batches = self.global_batches()
        self._num_batches = len(batches)
        mine = batches[:, self.rank * self.share : (self.rank + 1) * self.share]
        return iter(mine.reshape(-1).tolist())

    def __len__(self):
        if self._num_batches is None:
            self._num_batches = len(self.global_batches())
        return self._num_batches * self.share


class _seeded_generators:
    """Seed python's and numpy's generators (the global one and ``c_f.NUMPY_RANDOM``) for a block,
    then restore them: the samplers draw from these, and every process must draw the same global
    batches."""

    def __init__(self, seed):
        self.seed = seed % 2**32

    def __enter__(self):
        from ..utils import common_functions as c_f

        self.saved = (random.getstate(), np.random.get_state(), c_f.NUMPY_RANDOM)
        random.seed(self.seed)
        np.random.seed(self.seed)
        c_f.NUMPY_RANDOM = np.random.RandomState(self.seed)

    def __exit__(self, *exc):
        from ..utils import common_functions as c_f

        python_state, numpy_state, c_f.NUMPY_RANDOM = self.saved
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        return False
