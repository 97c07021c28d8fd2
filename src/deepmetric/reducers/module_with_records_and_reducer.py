"""Bases of the modules that own a reducer: losses and regularizers (which own a distance too)."""

import copy

from ..distances.module_with_records_and_distance import ModuleWithRecordsAndDistance
from ..utils.module_with_records import ModuleWithRecords
from .do_nothing_reducer import DoNothingReducer
from .mean_reducer import MeanReducer
from .multiple_reducers import MultipleReducers


class ModuleWithRecordsAndReducer(ModuleWithRecords):
    """Owns ``self.reducer``: one per sub-loss name, copied so that objects never share state."""

    def __init__(self, reducer=None, **kwargs):
        super().__init__(**kwargs)
        self.set_reducer(reducer)

    def get_default_reducer(self):
        return MeanReducer()

    def set_reducer(self, reducer):
        if isinstance(reducer, (MultipleReducers, DoNothingReducer)):
            self.reducer = reducer
        elif len(self.sub_loss_names()) == 1:
            self.reducer = (
                self.get_default_reducer() if reducer is None else copy.deepcopy(reducer)
            )
        else:
            reducer_dict = {}
            for k in self.sub_loss_names():
                reducer_dict[k] = (
                    self.get_default_reducer() if reducer is None else copy.deepcopy(reducer)
                )
            self.reducer = MultipleReducers(reducer_dict)

    def sub_loss_names(self):
        return ["loss"]


class ModuleWithRecordsReducerAndDistance(
    ModuleWithRecordsAndReducer, ModuleWithRecordsAndDistance
):
    """Owns both a reducer and a distance."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
