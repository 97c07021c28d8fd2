"""The face at deepmetric's earlier path of the torch k-means.

It re-exports names that live in ``deepmetric.evaluation.kmeans``, so that code written for that
path keeps importing; nothing inside deepmetric imports this module.
"""

from ..evaluation.kmeans import TorchKMeans

__all__ = [
    "TorchKMeans",
]
