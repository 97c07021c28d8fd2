"""The face at pytorch-metric-learning's path of the logging hooks.

It re-exports names that live in ``deepmetric.training.logging_presets``, so that code written
for that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..training.logging_presets import (
    EmptyContainer,
    HookContainer,
    get_hook_container,
    get_record_keeper,
)
from ..training.record_keeper import RecordKeeper, RecordWriter
from . import common_functions as c_f

__all__ = [
    "EmptyContainer",
    "HookContainer",
    "RecordKeeper",
    "RecordWriter",
    "c_f",
    "get_hook_container",
    "get_record_keeper",
]
