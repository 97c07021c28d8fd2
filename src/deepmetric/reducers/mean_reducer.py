"""Mean of the per-element / per-pair / per-triplet losses."""

from .base_reducer import BaseReducer
from .terms import reduces_terms


class MeanReducer(BaseReducer):
    """``mean(losses)`` for every reduction type; the default reducer of most losses.

    Lazy terms are averaged without being listed: ``sum / count`` over all of them.
    """

    @reduces_terms
    def element_reduction(self, losses, loss_indices, embeddings, labels):
        total, count = losses.kept_sum()
        return (total / count).to(losses.dtype)

    pos_pair_reduction = neg_pair_reduction = triplet_reduction = element_reduction
