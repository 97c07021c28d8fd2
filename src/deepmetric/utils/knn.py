"""The face at deepmetric's earlier path of the exact kNN search.

It re-exports names that live in ``deepmetric.evaluation.knn``, so that code written for that
path keeps importing; nothing inside deepmetric imports this module.
"""

from ..evaluation.knn import (
    DEFAULT_CPU_BUDGET_BYTES,
    DEFAULT_CUDA_BUDGET_BYTES,
    ExactKNN,
    default_distance,
    drop_own_entry,
    exact_knn,
    merge_candidates,
    search_exact,
)

__all__ = [
    "DEFAULT_CPU_BUDGET_BYTES",
    "DEFAULT_CUDA_BUDGET_BYTES",
    "ExactKNN",
    "default_distance",
    "drop_own_entry",
    "exact_knn",
    "merge_candidates",
    "search_exact",
]
