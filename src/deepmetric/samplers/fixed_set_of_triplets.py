"""A fixed, reusable set of random triplets, for offline triplet training."""

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from ..utils import common_functions as c_f
from ..utils.errors import require


class FixedSetOfTriplets(Sampler):
    """Draws ``num_triplets`` triplets once and yields them, reshuffled each epoch, flattened
    as ``[a0, p0, n0, a1, p1, n1, ...]``.

    Each triplet: an anchor class and a different negative class drawn uniformly; two distinct
    items of the anchor class (the same item twice when the class has one); a uniform item of
    the negative class. Pair it with a batch size that is a multiple of 3, no shuffling, and
    ``miners.EmbeddingsAlreadyPackagedAsTriplets``.
    """

    def __init__(self, labels, num_triplets):
        require(num_triplets > 0, f"num_triplets must be positive, got {num_triplets}")
        if torch.is_tensor(labels):
            labels = labels.cpu().numpy()
        self.num_triplets = int(num_triplets)
        self.labels_to_indices = c_f.get_labels_to_indices(labels)
        require(
            len(self.labels_to_indices) >= 2,
            f"triplets need at least 2 classes, got {len(self.labels_to_indices)}",
        )
        self.create_fixed_set_of_triplets()

    def __len__(self):
        return self.num_triplets * 3

    def __iter__(self):
        c_f.NUMPY_RANDOM.shuffle(self.fixed_set_of_triplets)
        return iter(self.fixed_set_of_triplets.flatten().tolist())

    def create_fixed_set_of_triplets(self):
        """All triplets at once: class draws, then positions inside each class's index list."""
        rng = c_f.NUMPY_RANDOM
        groups = list(self.labels_to_indices.values())
        sizes = np.array([len(g) for g in groups])
        starts = np.cumsum(sizes) - sizes
        flat = np.concatenate(groups)
        num_classes, t = len(groups), self.num_triplets
        anchor_class = rng.randint(0, num_classes, size=t)
        # A uniform class other than the anchor's: shift by 1..C-1 around the circle.
        negative_class = (anchor_class + rng.randint(1, num_classes, size=t)) % num_classes
        anchor_size = sizes[anchor_class]
        anchor_pos = (rng.random_sample(t) * anchor_size).astype(int)
        # A second, distinct position when the class has two items or more.
        shift = 1 + (rng.random_sample(t) * np.maximum(anchor_size - 1, 1)).astype(int)
        positive_pos = np.where(anchor_size > 1, (anchor_pos + shift) % anchor_size, anchor_pos)
        negative_pos = (rng.random_sample(t) * sizes[negative_class]).astype(int)
        self.fixed_set_of_triplets = np.stack(
            [
                flat[starts[anchor_class] + anchor_pos],
                flat[starts[anchor_class] + positive_pos],
                flat[starts[negative_class] + negative_pos],
            ],
            axis=1,
        ).astype(int)
