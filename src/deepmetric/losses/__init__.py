"""Metric-learning losses."""

from .angular_loss import AngularLoss
from .arcface_loss import ArcFaceLoss
from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .cached_batch_loss import CachedBatchLoss
from .circle_loss import CircleLoss
from .clip_loss import CLIPLoss
from .contrastive_loss import ContrastiveLoss
from .cosface_loss import CosFaceLoss
from .cross_batch_memory import CrossBatchMemory
from .dynamic_soft_margin_loss import DynamicSoftMarginLoss
from .fast_ap_loss import FastAPLoss
from .generic_pair_loss import GenericPairLoss
from .histogram_loss import HistogramLoss
from .instance_loss import InstanceLoss
from .intra_pair_variance_loss import IntraPairVarianceLoss
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss
from .lifted_structure_loss import GeneralizedLiftedStructureLoss, LiftedStructureLoss
from .manifold_loss import ManifoldLoss
from .margin_loss import MarginLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .multi_similarity_loss import MultiSimilarityLoss
from .multiple_losses import MultipleLosses
from .n_pairs_loss import NPairsLoss
from .nca_loss import NCALoss
from .normalized_softmax_loss import NormalizedSoftmaxLoss
from .ntxent_loss import NTXentLoss
from .p2s_grad_loss import P2SGradLoss
from .pnp_loss import PNPLoss
from .proxy_anchor_loss import ProxyAnchorLoss
from .proxy_losses import ProxyNCALoss
from .ranked_list_loss import RankedListLoss
from .self_supervised_loss import SelfSupervisedLoss
from .siglip_loss import SigLIPLoss
from .signal_to_noise_ratio_losses import SignalToNoiseRatioContrastiveLoss
from .smooth_ap import SmoothAPLoss
from .soft_triple_loss import SoftTripleLoss
from .sphereface_loss import SphereFaceLoss
from .subcenter_arcface_loss import SubCenterArcFaceLoss
from .supcon_loss import SupConLoss
from .tcm_loss import ThresholdConsistentMarginLoss
from .triplet_margin_loss import TripletMarginLoss
from .tuplet_margin_loss import TupletMarginLoss
from .vicreg_loss import VICRegLoss

__all__ = [
    "AngularLoss",
    "ArcFaceLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CLIPLoss",
    "CachedBatchLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "DynamicSoftMarginLoss",
    "EmbeddingRegularizerMixin",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "ManifoldLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "MultipleLosses",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PNPLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "SelfSupervisedLoss",
    "SigLIPLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "ThresholdConsistentMarginLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "VICRegLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
