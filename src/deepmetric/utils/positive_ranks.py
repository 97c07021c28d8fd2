"""The face at deepmetric's earlier path of the positive-rank engine.

It re-exports names that live in ``deepmetric.evaluation.positive_ranks``, so that code written
for that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..evaluation.positive_ranks import positive_ranks, supports_distance

__all__ = [
    "positive_ranks",
    "supports_distance",
]
