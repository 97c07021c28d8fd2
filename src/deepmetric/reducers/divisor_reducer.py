"""Sum of the losses divided by a divisor chosen by the loss itself."""

from .base_reducer import BaseReducer
from .terms import reduces_terms


class DivisorReducer(BaseReducer):
    """``sum(losses) / divisor``, where the loss puts ``"divisor"`` in its loss-dict entry.

    Lets a loss hard-code its normalisation while staying reducer-agnostic. A zero divisor gives
    the graph-attached zero. Half-precision losses are summed in float32 (a float16 sum
    overflows easily); lazy terms are summed without being listed.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(name="divisor", is_stat=True)

    def unpack_loss_info(self, loss_info):
        losses, indices, reduction_type, kwargs = super().unpack_loss_info(loss_info)
        if reduction_type != "already_reduced":
            kwargs = {"divisor": loss_info["divisor"]}
            if self.collect_stats:
                self.divisor = loss_info["divisor"]
        return losses, indices, reduction_type, kwargs

    def sum_and_divide(self, losses, embeddings, divisor):
        if divisor == 0:
            return self.zero_loss(embeddings)
        return (losses.kept_sum()[0] / divisor).to(losses.dtype)

    @reduces_terms
    def element_reduction(self, losses, loss_indices, embeddings, labels, divisor):
        return self.sum_and_divide(losses, embeddings, divisor)

    pos_pair_reduction = neg_pair_reduction = triplet_reduction = element_reduction
