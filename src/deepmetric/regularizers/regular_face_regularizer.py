"""RegularFace (Zhao et al., "RegularFace: Deep Face Recognition via Exclusive Regularization",
CVPR 2019)."""

import torch

from ..distances import CosineSimilarity
from ..utils import common_functions as c_f
from ..utils.errors import require
from .base_regularizer import BaseRegularizer


class RegularFaceRegularizer(BaseRegularizer):
    """Spreads class vectors apart: ``loss_i`` = similarity of row ``i`` to its most similar other
    row (the choice is made without gradient; the gradient flows through the similarity).

    The distance must be a similarity (default ``CosineSimilarity``).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        require(
            self.distance.is_inverted,
            "RegularFaceRegularizer requires a similarity (distance.is_inverted must be True)",
        )

    def compute_loss(self, weights):
        num_rows = weights.shape[0]
        sims = self.distance(weights)
        with torch.no_grad():
            others = sims.clone()
            others.fill_diagonal_(c_f.neg_inf(sims.dtype))
            _, nearest = self.distance.smallest_dist(others, dim=1)
        losses = sims[torch.arange(num_rows, device=sims.device), nearest]
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(weights),
                "reduction_type": "element",
            }
        }

    def get_default_distance(self):
        return CosineSimilarity()
