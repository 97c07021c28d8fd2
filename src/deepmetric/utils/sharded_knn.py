"""The face at deepmetric's earlier path of the sharded kNN search.

It re-exports names that live in ``deepmetric.evaluation.sharded_knn``, so that code written for
that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..evaluation.sharded_knn import sharded_knn

__all__ = [
    "sharded_knn",
]
