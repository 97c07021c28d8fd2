"""A fixed, reusable set of random triplets, for offline triplet training."""

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from ..utils import common_functions as c_f
from ..utils.errors import require


class FixedSetOfTriplets(Sampler):
    """Draws ``num_triplets`` triplets once and yields them, reshuffled each epoch, flattened
    as ``[a0, p0, n0, a1, p1, n1, ...]``.

    Each triplet, drawn in turn from ``c_f.NUMPY_RANDOM`` with the reference's calls: two
    distinct classes (``choice(classes, size=2, replace=False)``: anchor class, negative
    class); two items of the anchor class with ``c_f.safe_random_choice`` (distinct unless the
    class has one item); one item of the negative class. The same generator state therefore
    gives the reference's triplets. Every iteration shuffles the rows in place (the order
    carries over to the next iteration). Pair it with a batch size that is a multiple of 3, no
    shuffling, and ``miners.EmbeddingsAlreadyPackagedAsTriplets``.

    The triplets, in their current order, are the sampler's state (``state_dict`` /
    ``load_state_dict``), so that a resumed run yields what an uninterrupted one would.
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
        """One triplet at a time: a loop, because the reference's draw sequence depends on
        every class and class size (each ``choice`` without replacement permutes its whole
        population), so vectorising would change the triplets."""
        rng = c_f.NUMPY_RANDOM
        groups = list(self.labels_to_indices.values())
        triplets = np.empty((self.num_triplets, 3), dtype=int)
        for i in range(self.num_triplets):
            anchor_class, negative_class = rng.choice(len(groups), size=2, replace=False)
            anchors, negatives = groups[anchor_class], groups[negative_class]
            triplets[i, :2] = c_f.safe_random_choice(anchors, size=2)
            triplets[i, 2] = rng.choice(negatives, replace=False)
        self.fixed_set_of_triplets = triplets

    def state_dict(self):
        # A copy: the rows are shuffled in place by every iteration.
        return {"triplets": torch.tensor(self.fixed_set_of_triplets)}

    def load_state_dict(self, state):
        triplets = torch.as_tensor(state["triplets"]).cpu().numpy().astype(int)  # a copy
        require(
            triplets.shape == (self.num_triplets, 3),
            f"state['triplets'] must have shape ({self.num_triplets}, 3), got {triplets.shape}",
        )
        self.fixed_set_of_triplets = triplets
