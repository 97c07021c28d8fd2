"""Metric-learning losses."""

from .angular_loss import AngularLoss
from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .contrastive_loss import ContrastiveLoss
from .generic_pair_loss import GenericPairLoss
from .instance_loss import InstanceLoss
from .intra_pair_variance_loss import IntraPairVarianceLoss
from .margin_loss import MarginLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .signal_to_noise_ratio_losses import SignalToNoiseRatioContrastiveLoss
from .triplet_margin_loss import TripletMarginLoss
from .tuplet_margin_loss import TupletMarginLoss

__all__ = [
    "AngularLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "ContrastiveLoss",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "MarginLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
