"""Mean of the losses that fall strictly inside ``(low, high)``."""

from ..utils.errors import require
from .base_reducer import BaseReducer
from .terms import reduces_terms


class ThresholdReducer(BaseReducer):
    """Keeps losses ``> low`` (if set) and ``< high`` (if set) and averages the survivors.

    With no survivor the result is the graph-attached zero. ``already_reduced`` entries pass
    through unfiltered. On ``[3, 7, 1, 13, 5]``: ``low=6`` gives 10, ``high=6`` gives 3,
    ``low=6, high=12`` gives 7. Lazy terms are filtered and averaged without being listed.
    """

    def __init__(self, low=None, high=None, **kwargs):
        super().__init__(**kwargs)
        require(
            low is not None or high is not None,
            "ThresholdReducer needs at least one of low and high",
        )
        require(
            low is None or high is None or low < high,
            f"ThresholdReducer keeps losses strictly between low and high, so it needs low < high, "
            f"got low={low}, high={high} (no loss could ever be kept)",
        )
        self.low = low
        self.high = high
        self.add_to_recordable_attributes(list_of_names=["low", "high"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["num_past_filter", "num_above_low", "num_below_high"], is_stat=True
        )

    @reduces_terms
    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, embeddings)

    pos_pair_reduction = neg_pair_reduction = triplet_reduction = element_reduction

    def element_reduction_helper(self, losses, embeddings):
        total, num_past_filter = losses.kept_sum(self.low, self.high)
        if self.collect_stats:
            self.num_past_filter = num_past_filter
            if self.low is not None:
                self.num_above_low = losses.count(low=self.low)
            if self.high is not None:
                self.num_below_high = losses.count(high=self.high)
                # The reference records, under this misleading name, how many of the losses
                # above low are below high (and leaves num_below_high at 0); kept for parity.
                self.num_above_high = num_past_filter
        if num_past_filter >= 1:
            return (total / num_past_filter).to(losses.dtype)
        return self.zero_loss(embeddings)
