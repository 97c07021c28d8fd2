"""The face at pytorch-metric-learning's path of the loss tracker.

It re-exports names that live in ``deepmetric.training.loss_tracker``, so that code written for
that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..training.loss_tracker import LossTracker

__all__ = [
    "LossTracker",
]
