"""Mean of the losses, each weighted by its anchor's class weight."""

import torch

from ..utils import common_functions as c_f
from ..utils.errors import MissingInputError
from .base_reducer import BaseReducer


class ClassWeightedReducer(BaseReducer):
    """``mean(losses * weights[labels[anchor]])``; the divisor is the number of losses.

    Args:
        weights: 1-D tensor, ``weights[c]`` is the weight of class ``c``.
    """

    def __init__(self, weights, **kwargs):
        super().__init__(**kwargs)
        self.weights = weights

    def _weighted_mean(self, losses, anchors, labels):
        if labels is None:
            raise MissingInputError("ClassWeightedReducer needs labels to look up class weights")
        self.weights = c_f.to_device(self.weights, losses, dtype=losses.dtype)
        return torch.mean(losses * self.weights[labels[anchors]])

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return self._weighted_mean(losses, loss_indices, labels)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self._weighted_mean(losses, loss_indices[0], labels)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self._weighted_mean(losses, loss_indices[0], labels)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        return self._weighted_mean(losses, loss_indices[0], labels)
