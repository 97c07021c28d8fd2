"""Batches drawn from pairs (or tuples) of super classes."""

import itertools
from collections import defaultdict

import numpy as np
import torch
from torch.utils.data.sampler import BatchSampler

from ..utils import common_functions as c_f
from ..utils.errors import ShapeError, require


class HierarchicalSampler(BatchSampler):
    """A batch sampler for two-level labels (class, super class): every batch draws its classes
    from ``super_classes_per_batch`` super classes, ``batch_size // super_classes_per_batch``
    samples from each, ``samples_per_class`` per class (Brown et al., "Smooth-AP", ECCV 2020).

    It yields lists of dataset indices, so it is a ``torch.utils.data.BatchSampler``: use it as
    ``DataLoader(batch_sampler=...)``; the trainers do so when it is their ``sampler``. There
    are ``batches_per_super_tuple`` batches for every combination of super classes; the batches
    are redrawn at construction and at the start of every iteration. A batch can be shorter than
    ``batch_size`` when not enough classes fit (notably with ``samples_per_class="all"``).

    The draws are the reference's, in its order, from ``c_f.NUMPY_RANDOM``: for every
    combination of super classes (in the order ``itertools.combinations`` takes them from the
    ``set`` of super labels) and each of its batches, every super class shuffles its classes
    and adds ``c_f.safe_random_choice`` draws of each class while they fit; each batch is then
    shuffled, and finally the list of batches. The order of a ``set`` of strings depends on
    Python's hash seed (``PYTHONHASHSEED``), so with string super labels the stream is
    reproducible only under a fixed hash seed, as in the reference.

    Args:
        labels: ``(num_items, levels)`` array or tensor; column ``inner_label`` is the class,
            column ``outer_label`` the super class.
    """

    def __init__(
        self,
        labels,
        batch_size,
        samples_per_class,
        batches_per_super_tuple=4,
        super_classes_per_batch=2,
        inner_label=0,
        outer_label=1,
    ):
        if torch.is_tensor(labels):
            labels = labels.cpu().numpy()
        labels = np.asarray(labels)
        require(
            labels.ndim == 2,
            f"labels must be 2-D of shape (num_items, levels), got shape {labels.shape}",
            ShapeError,
        )
        require(
            batch_size % super_classes_per_batch == 0,
            f"batch_size ({batch_size}) must be a multiple of super_classes_per_batch "
            f"({super_classes_per_batch})",
        )
        self.batch_size = batch_size
        self.batches_per_super_tuple = batches_per_super_tuple
        self.samples_per_class = samples_per_class
        self.super_classes_per_batch = super_classes_per_batch
        self.sub_batch_len = batch_size // super_classes_per_batch
        if samples_per_class != "all":
            require(samples_per_class > 0, f"samples_per_class must be positive, got {samples_per_class}")
            require(
                self.sub_batch_len % samples_per_class == 0,
                f"batch_size // super_classes_per_batch = {self.sub_batch_len} must be a "
                f"multiple of samples_per_class ({samples_per_class})",
            )

        self.super_image_lists = defaultdict(lambda: defaultdict(list))
        for idx, (inner, outer) in enumerate(zip(labels[:, inner_label], labels[:, outer_label])):
            self.super_image_lists[outer][inner].append(idx)
        # The set's own iteration order, as the reference: it decides the combinations' order.
        super_labels = set(labels[:, outer_label])
        self.super_pairs = list(itertools.combinations(super_labels, super_classes_per_batch))
        self.reshuffle()

    def __iter__(self):
        self.reshuffle()
        yield from self.batches

    def __len__(self):
        return len(self.super_pairs) * self.batches_per_super_tuple

    def reshuffle(self):
        batches = []
        for super_tuple in self.super_pairs:
            for _ in range(self.batches_per_super_tuple):
                batch = []
                for super_class in super_tuple:
                    batch.extend(self._sub_batch(self.super_image_lists[super_class]))
                c_f.NUMPY_RANDOM.shuffle(batch)
                batches.append(batch)
        c_f.NUMPY_RANDOM.shuffle(batches)
        self.batches = batches

    def _sub_batch(self, classes):
        """Shuffled classes of one super class, each adding its samples while they fit."""
        names = list(classes)
        c_f.NUMPY_RANDOM.shuffle(names)
        sub_batch = []
        for name in names:
            instances = classes[name]
            count = len(instances) if self.samples_per_class == "all" else self.samples_per_class
            if len(sub_batch) + count > self.sub_batch_len:
                continue
            sub_batch.extend(int(i) for i in c_f.safe_random_choice(instances, size=count))
        return sub_batch
