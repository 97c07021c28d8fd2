"""Center-invariant regularization (Wu et al., "Deep Face Recognition with Center Invariant Loss",
ACM MM Workshops 2017)."""

import torch

from ..distances import LpDistance
from ..utils import common_functions as c_f
from .base_regularizer import BaseRegularizer


class CenterInvariantRegularizer(BaseRegularizer):
    """Pushes all rows towards the same norm: ``loss_i = (||x_i||^2 - mean_j ||x_j||^2)^2 / 4``.

    The distance must be ``LpDistance(power=1, normalize_embeddings=False)`` (any ``p``).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, power=1, normalize_embeddings=False)

    def compute_loss(self, weights):
        squared_norms = self.distance.get_norm(weights) ** 2
        deviations = squared_norms - torch.mean(squared_norms)
        return {
            "loss": {
                "losses": (deviations**2) / 4,
                "indices": c_f.torch_arange_from_size(weights),
                "reduction_type": "element",
            }
        }

    def get_default_distance(self):
        return LpDistance(power=1, normalize_embeddings=False)
