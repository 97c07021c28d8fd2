"""Metric-learning losses."""

from .arcface_loss import ArcFaceLoss
from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .contrastive_loss import ContrastiveLoss
from .cosface_loss import CosFaceLoss
from .generic_pair_loss import GenericPairLoss
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .normalized_softmax_loss import NormalizedSoftmaxLoss
from .p2s_grad_loss import P2SGradLoss
from .self_supervised_loss import SelfSupervisedLoss
from .sphereface_loss import SphereFaceLoss
from .subcenter_arcface_loss import SubCenterArcFaceLoss
from .triplet_margin_loss import TripletMarginLoss
from .vicreg_loss import VICRegLoss

__all__ = [
    "ArcFaceLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "ContrastiveLoss",
    "CosFaceLoss",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "LargeMarginSoftmaxLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "SelfSupervisedLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "TripletMarginLoss",
    "VICRegLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
