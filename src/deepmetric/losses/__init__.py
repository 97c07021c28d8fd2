"""Metric-learning losses."""

from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .contrastive_loss import ContrastiveLoss
from .fast_ap_loss import FastAPLoss
from .generic_pair_loss import GenericPairLoss
from .histogram_loss import HistogramLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .nca_loss import NCALoss
from .pnp_loss import PNPLoss
from .smooth_ap import SmoothAPLoss
from .triplet_margin_loss import TripletMarginLoss

__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "ContrastiveLoss",
    "EmbeddingRegularizerMixin",
    "FastAPLoss",
    "GenericPairLoss",
    "HistogramLoss",
    "NCALoss",
    "PNPLoss",
    "SmoothAPLoss",
    "TripletMarginLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
