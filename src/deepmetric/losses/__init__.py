"""Metric-learning losses."""

from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .circle_loss import CircleLoss
from .contrastive_loss import ContrastiveLoss
from .generic_pair_loss import GenericPairLoss
from .lifted_structure_loss import GeneralizedLiftedStructureLoss, LiftedStructureLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .multi_similarity_loss import MultiSimilarityLoss
from .n_pairs_loss import NPairsLoss
from .ntxent_loss import NTXentLoss
from .supcon_loss import SupConLoss
from .triplet_margin_loss import TripletMarginLoss

__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CircleLoss",
    "ContrastiveLoss",
    "EmbeddingRegularizerMixin",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
