"""The face at deepmetric's earlier path of the sharded evaluation.

It re-exports names that live in ``deepmetric.evaluation.sharded_evaluation``, so that code
written for that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..evaluation.sharded_evaluation import active, calculator_distance, sharded_accuracy
from ..ops.gather import gather_rows

__all__ = [
    "active",
    "calculator_distance",
    "gather_rows",
    "sharded_accuracy",
]
