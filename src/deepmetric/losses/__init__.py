"""Metric-learning losses."""

from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .contrastive_loss import ContrastiveLoss
from .dynamic_soft_margin_loss import DynamicSoftMarginLoss
from .generic_pair_loss import GenericPairLoss
from .manifold_loss import ManifoldLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .ranked_list_loss import RankedListLoss
from .tcm_loss import ThresholdConsistentMarginLoss
from .triplet_margin_loss import TripletMarginLoss

__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "ContrastiveLoss",
    "DynamicSoftMarginLoss",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "ManifoldLoss",
    "RankedListLoss",
    "ThresholdConsistentMarginLoss",
    "TripletMarginLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
