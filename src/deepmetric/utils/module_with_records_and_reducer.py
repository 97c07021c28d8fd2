"""The face at pytorch-metric-learning's path of the bases that own a reducer or a distance.

It re-exports names that live in ``deepmetric.reducers.module_with_records_and_reducer`` and
``deepmetric.distances.module_with_records_and_distance``, so that code written for that path
keeps importing; nothing inside deepmetric imports this module.
"""

from ..distances import LpDistance
from ..distances.module_with_records_and_distance import ModuleWithRecordsAndDistance
from ..reducers import DoNothingReducer, MeanReducer, MultipleReducers
from ..reducers.module_with_records_and_reducer import (
    ModuleWithRecordsAndReducer,
    ModuleWithRecordsReducerAndDistance,
)
from .module_with_records import ModuleWithRecords

__all__ = [
    "DoNothingReducer",
    "LpDistance",
    "MeanReducer",
    "ModuleWithRecords",
    "ModuleWithRecordsAndDistance",
    "ModuleWithRecordsAndReducer",
    "ModuleWithRecordsReducerAndDistance",
    "MultipleReducers",
]
