"""Batches made of ``m`` samples from each of several classes."""

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from ..utils import common_functions as c_f
from ..utils.errors import SizeArgumentError, require


class MPerClassSampler(Sampler):
    """Yields dataset indices so that classes come in groups of ``m`` samples.

    One iteration is ``num_iters`` rounds (``length_before_new_iter`` divided by ``batch_size``,
    or by ``m * number of classes`` without a batch size; at least one). Every round shuffles the
    list of classes ``self.labels`` in place (so each round starts from the order the previous
    round left, also across iterations), takes its first ``batch_size // m`` classes (all of
    them without ``batch_size``) and draws ``m`` items of each with ``c_f.safe_random_choice``
    (without replacement, or with it when a class has fewer than ``m`` items). These are the
    reference's draws, in its order: the same ``c_f.NUMPY_RANDOM`` state gives the same stream.

    With ``batch_size`` given, and a ``DataLoader`` using the same batch size without
    shuffling, every batch holds exactly ``batch_size // m`` classes with ``m`` samples each.

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
            and 0 (single-process behaviour).
        seed: keyword-only, used only with several replicas: the epoch list is the one the
            single-process algorithm draws with ``np.random.RandomState(seed + epoch)``,
            starting from the classes in order of first appearance, so that all ranks agree
            and an epoch does not depend on the ones before it. Call ``set_epoch`` every epoch.

    Randomness comes from ``c_f.NUMPY_RANDOM`` (read at call time) in single-process use. The
    class order carried from one iteration to the next is the sampler's state
    (``state_dict`` / ``load_state_dict``), so that a resumed run draws what an uninterrupted
    one would.
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
        # Classes in order of first appearance; shuffled in place by every round.
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
            return iter(self._draw_list(c_f.NUMPY_RANDOM, self.labels))
        rng = np.random.RandomState(self.seed + self.epoch)
        idx_list = np.asarray(self._draw_list(rng, list(self.labels_to_indices.keys())))
        block = self._block_size()
        blocks = idx_list[: len(idx_list) // block * block].reshape(-1, block)
        mine = blocks[self.rank :: self.num_replicas][: self._share_blocks()]
        return iter(mine.reshape(-1).tolist())

    def calculate_num_iters(self):
        """Rounds per iteration: ``list_size`` over the batch size (or one pass's length)."""
        divisor = self.length_of_single_pass if self.batch_size is None else self.batch_size
        return self.list_size // divisor if divisor < self.list_size else 1

    def _draw_list(self, rng, labels):
        """The index list of one iteration; shuffles the list ``labels`` in place."""
        classes_per_round = None if self.batch_size is None else self.batch_size // self.m_per_class
        chunks = []
        for _ in range(self.calculate_num_iters()):
            rng.shuffle(labels)
            for label in labels[:classes_per_round]:
                indices = self.labels_to_indices[label]
                # c_f.safe_random_choice's rule, on the given generator.
                replace = len(indices) < self.m_per_class
                chunks.append(rng.choice(indices, size=self.m_per_class, replace=replace))
        # Normally exactly list_size items; longer when one pass exceeds length_before_new_iter
        # (no batch_size), as in the reference.
        return np.concatenate(chunks).tolist()

    def state_dict(self):
        """The current class order, as positions in the order of first appearance."""
        position = {label: i for i, label in enumerate(self.labels_to_indices)}
        return {"label_order": [position[label] for label in self.labels]}

    def load_state_dict(self, state):
        """Restore the class order saved by ``state_dict``."""
        order = list(state["label_order"])
        first_seen = list(self.labels_to_indices)
        require(
            sorted(order) == list(range(len(first_seen))),
            f"state['label_order'] must be a permutation of range({len(first_seen)}) (one entry "
            f"per class), got {len(order)} entries",
        )
        self.labels[:] = [first_seen[i] for i in order]

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
