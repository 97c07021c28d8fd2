"""Sum of the losses divided by a divisor chosen by the loss itself."""

import torch

from .base_reducer import BaseReducer


class DivisorReducer(BaseReducer):
    """``sum(losses) / divisor``, where the loss puts ``"divisor"`` in its loss-dict entry.

    Lets a loss hard-code its normalisation while staying reducer-agnostic. A zero divisor gives
    the graph-attached zero.
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
        output = torch.sum(losses) / divisor
        if losses.dtype == torch.float16 and not torch.isfinite(output):
            # float16 sums overflow easily (to inf, or NaN); redo the sum in float32.
            output = (torch.sum(losses.float()) / divisor).half()
        return output

    def element_reduction(self, losses, loss_indices, embeddings, labels, divisor):
        return self.sum_and_divide(losses, embeddings, divisor)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, divisor):
        return self.sum_and_divide(losses, embeddings, divisor)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, divisor):
        return self.sum_and_divide(losses, embeddings, divisor)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, divisor):
        return self.sum_and_divide(losses, embeddings, divisor)
