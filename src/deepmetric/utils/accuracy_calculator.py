"""The face at pytorch-metric-learning's path of the accuracy calculator.

It re-exports names that live in ``deepmetric.evaluation.accuracy_calculator``, so that code
written for that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..evaluation.accuracy_calculator import AccuracyCalculator, default_kmeans_func
from ..evaluation.inference import FaissKMeans, FaissKNN
from ..evaluation.kmeans import TorchKMeans
from ..evaluation.knn import ExactKNN
from ..evaluation.relevance import (
    EQUALITY,
    get_label_match_counts,
    get_lone_query_labels,
    get_relevance_mask,
    get_unique_labels,
    try_getting_not_lone_labels,
)
from ..evaluation.retrieval_metrics import (
    maybe_get_avg_of_avgs,
    mean_average_precision,
    mean_average_precision_at_k,
    mean_reciprocal_rank,
    nan_accuracy,
    precision_at_k,
    r_precision,
    recall_at_k,
)
from . import common_functions as c_f

__all__ = [
    "AccuracyCalculator",
    "EQUALITY",
    "ExactKNN",
    "FaissKMeans",
    "FaissKNN",
    "TorchKMeans",
    "c_f",
    "default_kmeans_func",
    "get_label_match_counts",
    "get_lone_query_labels",
    "get_relevance_mask",
    "get_unique_labels",
    "maybe_get_avg_of_avgs",
    "mean_average_precision",
    "mean_average_precision_at_k",
    "mean_reciprocal_rank",
    "nan_accuracy",
    "precision_at_k",
    "r_precision",
    "recall_at_k",
    "try_getting_not_lone_labels",
]
