"""Base of losses that wrap another loss (CrossBatchMemory, SelfSupervisedLoss)."""

import torch

# The losses whose positives and negatives come from labels alone (pairs or triplets), so that a
# wrapper may choose the labels (augmented views, a memory of past batches).
TUPLE_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NCALoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
)


class BaseLossWrapper(torch.nn.Module):
    """Checks at construction that the wrapped loss's class is supported.

    Subclasses implement ``supported_losses()`` (class names) and store the wrapped loss
    themselves. The check is by exact class name; an unsupported loss raises ``ValueError``
    (an ``Exception``, which is what the reference raises).
    """

    def __init__(self, loss, **kwargs):
        super().__init__(**kwargs)
        self.check_loss_support(type(loss).__name__)

    @staticmethod
    def supported_losses():
        raise NotImplementedError

    @classmethod
    def check_loss_support(cls, loss_name):
        if loss_name not in cls.supported_losses():
            raise ValueError(
                f"{cls.__name__} not supported for {loss_name}; supported losses: "
                f"{', '.join(cls.supported_losses())}"
            )
