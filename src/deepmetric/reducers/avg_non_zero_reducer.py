"""Mean of the strictly positive losses."""

from .threshold_reducer import ThresholdReducer


class AvgNonZeroReducer(ThresholdReducer):
    """``ThresholdReducer(low=0)``: averages only the losses that are > 0 ([0, 2, 0, 3] -> 2.5).

    Hinge losses (triplet, contrastive) are 0 on easy tuples; averaging over the active ones keeps
    the loss scale from shrinking as training makes most tuples easy.
    """

    def __init__(self, **kwargs):
        super().__init__(low=0, **kwargs)
