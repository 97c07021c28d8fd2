"""Turns pair losses into per-anchor losses before reducing them."""

import torch

from ..utils import common_functions as c_f
from .base_reducer import BaseReducer
from .mean_reducer import MeanReducer
from .terms import reduces_terms


def aggregation_func(x, num_per_row):
    """Mean over each row's existing pairs; rows with no pair give 0."""
    row_sums = torch.sum(x, dim=1)
    means = row_sums / num_per_row.clamp_min(1).to(x.dtype)
    return torch.where(num_per_row == 0, torch.zeros_like(means), means)


class PerAnchorReducer(BaseReducer):
    """Aggregates the pair losses of each anchor (``aggregation_func``), then applies ``reducer``.

    Element losses go straight to the inner reducer; triplets are not supported.
    """

    def __init__(self, reducer=None, aggregation_func=aggregation_func, **kwargs):
        super().__init__(**kwargs)
        self.reducer = reducer if reducer is not None else MeanReducer()
        self.aggregation_func = aggregation_func

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        loss_dict = {
            "loss": {"losses": losses, "indices": loss_indices, "reduction_type": "element"}
        }
        return self.reducer(loss_dict, embeddings, labels)

    @reduces_terms
    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self.tuple_reduction_helper(losses, loss_indices, embeddings, labels)

    neg_pair_reduction = pos_pair_reduction

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError("PerAnchorReducer does not support triplet losses")

    def tuple_reduction_helper(self, losses, loss_indices, embeddings, labels):
        # Pair terms as a matrix (anchors x others) with zeros where there is no pair; lazy
        # terms build it from their mask without listing the pairs.
        matrix, num_per_row = losses.pair_matrix(embeddings.shape[0], embeddings.shape[0])
        per_anchor = self.aggregation_func(matrix, num_per_row)
        loss_dict = {
            "loss": {
                "losses": per_anchor,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
        return self.reducer(loss_dict, embeddings, labels)
