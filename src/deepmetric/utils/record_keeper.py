"""The face at deepmetric's earlier path of the record keeper.

It re-exports names that live in ``deepmetric.training.record_keeper``, so that code written for
that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..training.record_keeper import (
    ITERATION,
    MAX_GROUP_NAME,
    RecordKeeper,
    RecordWriter,
    sqlite_obj_to_dict,
)

__all__ = [
    "ITERATION",
    "MAX_GROUP_NAME",
    "RecordKeeper",
    "RecordWriter",
    "sqlite_obj_to_dict",
]
