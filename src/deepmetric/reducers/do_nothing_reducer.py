"""Returns the loss dict unreduced (for inspecting what a loss computed)."""

from .base_reducer import BaseReducer
from .terms import materialized


class DoNothingReducer(BaseReducer):
    """``forward`` returns the ``loss_dict`` (lazy terms listed, as the reference lists them), so
    the loss call returns a dict."""

    def forward(self, loss_dict, embeddings, labels):
        return materialized(loss_dict)
