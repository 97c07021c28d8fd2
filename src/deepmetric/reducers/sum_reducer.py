"""Sum of the losses."""

import torch

from .mean_reducer import MeanReducer


class SumReducer(MeanReducer):
    """``sum(losses)`` for every reduction type."""

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.sum(losses)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.sum(losses)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.sum(losses)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.sum(losses)
