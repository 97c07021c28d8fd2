"""Batches made of ``m`` samples from each of several classes."""

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from ..utils import common_functions as c_f
from ..utils.errors import SizeArgumentError, require


class MPerClassSampler(Sampler):
    """Yields dataset indices so that classes come in groups of ``m`` samples.

    Every pass shuffles the classes and takes ``m`` samples from each (with replacement only
    when a class has fewer than ``m`` items). With ``batch_size`` given, and a ``DataLoader``
    using the same batch size without shuffling, every batch holds exactly
    ``batch_size // m`` classes with ``m`` samples each.

    Args:
        labels: ``labels[i]`` is the class of dataset item ``i`` (sequence, array or tensor).
        m: samples per class.
        batch_size: optional; must be a multiple of ``m``, at most ``m * number of classes``
            and at most ``length_before_new_iter``.
        length_before_new_iter: how many indices one iteration yields (rounded down to a
            multiple of the batch size, or of ``m * number of classes``).
        num_replicas, rank: keyword-only, for ``torch.distributed``: each of ``num_replicas``
            processes iterates over a disjoint share (whole batches) of the same epoch list.
            Default to the process group's world size and rank when it is initialised, else 1
            and 0 (single-process behaviour, unchanged).
        seed: keyword-only, used only with several replicas: every rank draws the epoch list
            from ``seed + epoch`` so that all ranks agree. Call ``set_epoch`` every epoch.

    Randomness comes from ``c_f.NUMPY_RANDOM`` (read at call time) in single-process use.
    """

    def __init__(
        self,
        labels,
        m,
        batch_size=None,
        length_before_new_iter=100000,
        *,
        num_replicas=None,
        rank=None,
        seed=0,
    ):
        if torch.is_tensor(labels):
            labels = labels.cpu().numpy()
        self.m_per_class = int(m)
        self.batch_size = int(batch_size) if batch_size is not None else batch_size
        self.labels_to_indices = c_f.get_labels_to_indices(labels)
        self.labels = list(self.labels_to_indices.keys())
        self.length_of_single_pass = self.m_per_class * len(self.labels)
        self.list_size = length_before_new_iter
        require(self.m_per_class > 0, f"m must be positive, got {m}", SizeArgumentError)
        require(
            len(self.labels) > 0, "labels is empty: the sampler needs at least one class", SizeArgumentError
        )
        if self.batch_size is None:
            if self.length_of_single_pass < self.list_size:
                self.list_size -= self.list_size % self.length_of_single_pass
        else:
            require(
                self.list_size >= self.batch_size,
                f"length_before_new_iter ({self.list_size}) must be at least batch_size "
                f"({self.batch_size})",
            )
            require(
                self.length_of_single_pass >= self.batch_size,
                f"m * (number of classes) = {self.m_per_class} * {len(self.labels)} = "
                f"{self.length_of_single_pass} must be at least batch_size ({self.batch_size})",
            )
            require(
                self.batch_size % self.m_per_class == 0,
                f"batch_size ({self.batch_size}) must be a multiple of m ({self.m_per_class})",
            )
            self.list_size -= self.list_size % self.batch_size
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the epoch whose list the replicas share (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self):
        if self.num_replicas == 1:
            return self.list_size
        return self._share_blocks() * self._block_size()

    def __iter__(self):
        if self.num_replicas == 1:
            return iter(self._epoch_list(c_f.NUMPY_RANDOM))
        rng = np.random.RandomState(self.seed + self.epoch)
        idx_list = self._epoch_list(rng)
        block = self._block_size()
        blocks = idx_list[: len(idx_list) // block * block].reshape(-1, block)
        mine = blocks[self.rank :: self.num_replicas][: self._share_blocks()]
        return iter(mine.reshape(-1).tolist())

    def _epoch_list(self, rng):
        if self.batch_size is None:
            divisor = self.length_of_single_pass
        else:
            divisor = self.batch_size
        num_iters = self.list_size // divisor if divisor < self.list_size else 1
        if self.batch_size is None:
            classes_per_iter = len(self.labels)
        else:
            classes_per_iter = self.batch_size // self.m_per_class
        chunks = []
        for _ in range(num_iters):
            order = rng.permutation(len(self.labels))[:classes_per_iter]
            for c in order:
                indices = self.labels_to_indices[self.labels[c]]
                replace = len(indices) < self.m_per_class
                chunks.append(rng.choice(indices, size=self.m_per_class, replace=replace))
        # Normally exactly list_size items; longer when one pass exceeds length_before_new_iter
        # (no batch_size), as in the reference.
        return np.concatenate(chunks)

    def _block_size(self):
        return self.batch_size if self.batch_size is not None else self.m_per_class

    def _share_blocks(self):
        return (self.list_size // self._block_size()) // self.num_replicas


def _distributed_defaults(num_replicas, rank):
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    require(num_replicas >= 1, f"num_replicas must be at least 1, got {num_replicas}")
    require(
        0 <= rank < num_replicas, f"rank must be in [0, {num_replicas - 1}], got {rank}"
    )
    return int(num_replicas), int(rank)
