"""Mean of the per-element / per-pair / per-triplet losses."""

import torch

from .base_reducer import BaseReducer


class MeanReducer(BaseReducer):
    """``mean(losses)`` for every reduction type; the default reducer of most losses."""

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.mean(losses)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.mean(losses)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.mean(losses)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        return torch.mean(losses)
