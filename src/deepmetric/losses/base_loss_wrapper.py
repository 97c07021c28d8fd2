"""Base of losses that wrap another loss (CrossBatchMemory, SelfSupervisedLoss)."""

import torch


class BaseLossWrapper(torch.nn.Module):
    """Checks at construction that the wrapped loss's class is supported.

    Subclasses implement ``supported_losses()`` (class names) and ``check_loss_support``, and
    store the wrapped loss themselves. The check is by exact class name.
    """

    def __init__(self, loss, **kwargs):
        super().__init__(**kwargs)
        self.check_loss_support(type(loss).__name__)

    @staticmethod
    def supported_losses():
        raise NotImplementedError

    @classmethod
    def check_loss_support(cls, loss_name):
        raise NotImplementedError
