"""The miner rows of the benchmark grid."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MinerCase:
    name: str
    miner: str
    kwargs: dict = field(default_factory=dict)
    # Also measured at the large (memory-target) size. AngularMiner is not: with its default
    # angle it returns a constant fraction of all N^3 triplets, so its output alone outgrows 2 GB.
    large: bool = True


CASES = [
    MinerCase("AngularMiner", "AngularMiner", large=False),
    MinerCase("BatchEasyHardMiner", "BatchEasyHardMiner"),
    MinerCase("BatchHardMiner", "BatchHardMiner"),
    MinerCase("DistanceWeightedMiner", "DistanceWeightedMiner"),
    MinerCase("EmbeddingsAlreadyPackagedAsTriplets", "EmbeddingsAlreadyPackagedAsTriplets"),
    MinerCase("HDCMiner", "HDCMiner"),
    MinerCase("MultiSimilarityMiner", "MultiSimilarityMiner"),
    MinerCase("PairMarginMiner", "PairMarginMiner"),
    MinerCase("TripletMarginMiner", "TripletMarginMiner"),
    MinerCase("TripletMarginMiner(semihard)", "TripletMarginMiner", {"type_of_triplets": "semihard"}),
    MinerCase("UniformHistogramMiner", "UniformHistogramMiner"),
]
