"""Signal-to-noise-ratio contrastive loss (Yuan, Chen, Zhang & Wang, "Signal-To-Noise Ratio: A
Robust Distance Metric for Deep Metric Learning", CVPR 2019)."""

from ..distances import SNRDistance
from ..utils import common_functions as c_f
from .contrastive_loss import ContrastiveLoss


class SignalToNoiseRatioContrastiveLoss(ContrastiveLoss):
    """ContrastiveLoss on the SNR distance ``var(x_j - x_i) / var(x_i)``:

        pos = [SNR_ap - pos_margin]+        neg = [neg_margin - SNR_an]+

    Sub-losses ``pos_loss`` and ``neg_loss``, each averaged over its non-zero terms by default.
    The distance must be an :class:`SNRDistance` (the default).

    Args:
        pos_margin: SNR below which positive pairs are not penalised.
        neg_margin: SNR above which negative pairs are not penalised.
    """

    def __init__(self, pos_margin=0, neg_margin=1, **kwargs):
        super().__init__(pos_margin=pos_margin, neg_margin=neg_margin, **kwargs)
        c_f.assert_distance_type(self, SNRDistance)

    def get_default_distance(self):
        return SNRDistance()
