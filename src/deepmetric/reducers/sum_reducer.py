"""Sum of the losses."""

from .mean_reducer import MeanReducer
from .terms import reduces_terms


class SumReducer(MeanReducer):
    """``sum(losses)`` for every reduction type."""

    @reduces_terms
    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return losses.kept_sum()[0].to(losses.dtype)

    pos_pair_reduction = neg_pair_reduction = triplet_reduction = element_reduction
