"""Distance-weighted sampling of negatives."""

import torch

from ..distances import LpDistance
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner, empty_indices


class DistanceWeightedMiner(BaseMiner):
    """Samples negatives with probability inversely proportional to the density of pairwise
    distances on the unit sphere (Wu et al., "Sampling Matters in Deep Embedding Learning",
    ICCV 2017):

    ``log w = (2 - D) log d - ((D - 3) / 2) log(1 - d^2 / 4)``, with ``d`` clamped below at
    ``cutoff`` and ``w = 0`` where ``d >= nonzero_loss_cutoff``, for same-label pairs, and where
    the formula is not finite. Each anchor gets as many triplets as its class has members in
    the reference set: positives uniform, negatives drawn in proportion to ``w``, by
    ``lmu.get_random_triplet_indices`` (one class at a time, in ascending label order: a
    ``torch.randint`` for the positives, then a ``torch.multinomial`` over the normalised rows
    for the negatives). These are the reference's calls on the same weights, so the same
    ``torch.manual_seed`` gives the same triplets.

    Requires ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the default). Works well
    for low-dimensional (about 64) embeddings.
    """

    def __init__(self, cutoff=0.5, nonzero_loss_cutoff=1.4, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        self.add_to_recordable_attributes(
            list_of_names=["cutoff", "nonzero_loss_cutoff"], is_stat=False
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        dim = float(embeddings.size(1))
        mat = self.distance(embeddings, ref_emb).clamp(min=self.cutoff)
        log_weights = (2.0 - dim) * torch.log(mat) - ((dim - 3) / 2) * torch.log(
            1.0 - 0.25 * (mat**2.0)
        )
        not_finite = ~torch.isfinite(log_weights)
        different_class = ~lmu.related_labels(labels, ref_labels, self.label_relation)
        log_weights = log_weights * different_class
        finite_values = log_weights[~not_finite]
        if finite_values.numel() == 0:
            # Every weight is degenerate: nothing can be sampled (the reference raises here).
            return empty_indices(labels.device, 3)
        # Subtracting the largest finite log-weight keeps exp() in range.
        weights = torch.exp(log_weights - finite_values.max())
        weights = weights * (different_class & (mat < self.nonzero_loss_cutoff))
        weights = weights.masked_fill(not_finite, 0)
        # Normalised rows, as the reference hands them to the sampler: the same probabilities
        # bit for bit, hence the same multinomial draws. A row of zeros becomes NaN and gets no
        # triplet.
        weights = weights / torch.sum(weights, dim=1, keepdim=True)
        return lmu.get_random_triplet_indices(
            labels, ref_labels=ref_labels, weights=weights, relation=self.label_relation
        )
