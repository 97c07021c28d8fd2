"""Zero-mean regularization: penalise the sum of each row's components."""

import torch

from ..utils import common_functions as c_f
from .base_regularizer import BaseRegularizer


class ZeroMeanRegularizer(BaseRegularizer):
    """``loss_i = |sum_d x_id|``; mean over rows by default."""

    def compute_loss(self, embeddings):
        return {
            "loss": {
                "losses": torch.abs(torch.sum(embeddings, dim=1)),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
