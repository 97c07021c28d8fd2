"""The face at pytorch-metric-learning's path of inference, kNN and k-means.

It re-exports names that live in ``deepmetric.evaluation.inference``, so that code written for
that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..distances import BatchedDistance, CosineSimilarity
from ..evaluation.inference import (
    CustomKNN,
    FaissKMeans,
    FaissKNN,
    InferenceModel,
    MatchFinder,
    add_to_index_and_search,
    convert_to_cpu_index,
    convert_to_gpu_index,
    get_topk,
    mask_reshape_knn_idx,
    return_results,
    run_pca,
    try_gpu,
)
from ..evaluation.knn import ExactKNN, exact_knn
from . import common_functions as c_f

__all__ = [
    "BatchedDistance",
    "CosineSimilarity",
    "CustomKNN",
    "ExactKNN",
    "FaissKMeans",
    "FaissKNN",
    "InferenceModel",
    "MatchFinder",
    "add_to_index_and_search",
    "c_f",
    "convert_to_cpu_index",
    "convert_to_gpu_index",
    "exact_knn",
    "get_topk",
    "mask_reshape_knn_idx",
    "return_results",
    "run_pca",
    "try_gpu",
]
