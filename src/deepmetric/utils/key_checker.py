"""The face at pytorch-metric-learning's path of the key checkers.

It re-exports names that live in ``deepmetric.training.key_checker``, so that code written for
that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..training.key_checker import KeyChecker, KeyCheckerDict, default_important
from . import common_functions as c_f

__all__ = [
    "KeyChecker",
    "KeyCheckerDict",
    "c_f",
    "default_important",
]
