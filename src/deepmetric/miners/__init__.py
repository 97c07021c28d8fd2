"""Online miners: pick informative pairs or triplets from a batch."""

from .angular_miner import AngularMiner
from .base_miner import BaseMiner
from .batch_easy_hard_miner import BatchEasyHardMiner
from .batch_hard_miner import BatchHardMiner
from .distance_weighted_miner import DistanceWeightedMiner
from .embeddings_already_packaged_as_triplets import EmbeddingsAlreadyPackagedAsTriplets
from .hdc_miner import HDCMiner
from .multi_similarity_miner import MultiSimilarityMiner
from .pair_margin_miner import PairMarginMiner
from .triplet_margin_miner import TripletMarginMiner
from .uniform_histogram_miner import UniformHistogramMiner

__all__ = [
    "AngularMiner",
    "BaseMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "EmbeddingsAlreadyPackagedAsTriplets",
    "HDCMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
]
