"""One reducer per sub-loss, summed."""

import torch

from .base_reducer import BaseReducer
from .mean_reducer import MeanReducer


class MultipleReducers(BaseReducer):
    """Reduces each entry of a multi-entry ``loss_dict`` with its own reducer, then sums.

    Args:
        reducers: ``{sub_loss_name: reducer}``.
        default_reducer: used for names missing from ``reducers`` (default ``MeanReducer()``).

    Example: ``ContrastiveLoss(reducer=MultipleReducers({"pos_loss": ThresholdReducer(0.1),
    "neg_loss": MeanReducer()}))``.
    """

    def __init__(self, reducers, default_reducer=None, **kwargs):
        super().__init__(**kwargs)
        self.reducers = torch.nn.ModuleDict(reducers)
        self.default_reducer = MeanReducer() if default_reducer is None else default_reducer

    def forward(self, loss_dict, embeddings, labels):
        self.reset_stats()
        sub_losses = []
        for loss_name, loss_info in loss_dict.items():
            reducer = self.reducers[loss_name] if loss_name in self.reducers else self.default_reducer
            value = reducer({loss_name: loss_info}, embeddings, labels)
            sub_losses.append(value.reshape(()).to(embeddings.dtype))
        if not sub_losses:
            return self.zero_loss(embeddings)
        return self.sub_loss_reduction(torch.stack(sub_losses), embeddings, labels)

    def sub_loss_reduction(self, sub_losses, embeddings=None, labels=None):
        """How the reduced sub-losses combine (a sum); subclasses may override."""
        return torch.sum(sub_losses)
