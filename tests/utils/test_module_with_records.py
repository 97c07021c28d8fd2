"""Tests of ModuleWithRecords and its reducer/distance variants."""

import pytest

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.distances.module_with_records_and_distance import ModuleWithRecordsAndDistance
from deepmetric.reducers import (
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    SumReducer,
    ThresholdReducer,
)
from deepmetric.reducers.module_with_records_and_reducer import (
    ModuleWithRecordsAndReducer,
    ModuleWithRecordsReducerAndDistance,
)
from deepmetric.utils import common_functions as c_f
from deepmetric.utils.module_with_records import ModuleWithRecords


class WithStats(ModuleWithRecords):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.margin = 0.3
        self.add_to_recordable_attributes(name="margin")
        self.add_to_recordable_attributes(list_of_names=["num_pos", "num_neg"], is_stat=True)


def test_stats_exist_only_with_collect_stats():
    off = WithStats(collect_stats=False)
    assert off._record_these == ["margin"] and off.margin == 0.3
    assert not hasattr(off, "_record_these_stats") and not hasattr(off, "num_pos")
    on = WithStats(collect_stats=True)
    assert on._record_these_stats == ["num_pos", "num_neg"] and on.num_pos == 0


def test_collect_stats_default_read_from_global_at_construction(monkeypatch):
    monkeypatch.setattr(c_f, "COLLECT_STATS", True)
    on = WithStats()
    monkeypatch.setattr(c_f, "COLLECT_STATS", False)
    off = WithStats()
    assert on.collect_stats is True and hasattr(on, "num_pos")
    assert off.collect_stats is False and not hasattr(off, "num_pos")
    assert on.collect_stats is True  # later changes do not affect existing objects
    monkeypatch.setattr(c_f, "COLLECT_STATS", True)
    assert WithStats(collect_stats=False).collect_stats is False  # explicit value wins


def test_reset_stats():
    m = WithStats(collect_stats=True)
    m.num_pos, m.num_neg = 7, 9
    m.reset_stats()
    assert (m.num_pos, m.num_neg, m.margin) == (0, 0, 0.3)
    WithStats(collect_stats=False).reset_stats()  # no stats list: nothing to do


class TwoSubLosses(ModuleWithRecordsAndReducer):
    def sub_loss_names(self):
        return ["pos_loss", "neg_loss"]


def test_default_reducer_is_mean():
    m = ModuleWithRecordsAndReducer()
    assert type(m.reducer) is MeanReducer and m.sub_loss_names() == ["loss"]


def test_set_reducer_deep_copies():
    reducer = ThresholdReducer(low=0.1)
    m1, m2 = ModuleWithRecordsAndReducer(reducer=reducer), ModuleWithRecordsAndReducer(reducer=reducer)
    assert isinstance(m1.reducer, ThresholdReducer) and m1.reducer.low == 0.1
    assert m1.reducer is not reducer and m1.reducer is not m2.reducer


@pytest.mark.parametrize("make", [lambda: DoNothingReducer(), lambda: MultipleReducers({"pos_loss": SumReducer()})])
def test_multiple_and_do_nothing_reducers_used_as_is(make):
    reducer = make()
    assert ModuleWithRecordsAndReducer(reducer=reducer).reducer is reducer
    assert TwoSubLosses(reducer=reducer).reducer is reducer


def test_several_sub_losses_get_multiple_reducers():
    m = TwoSubLosses()
    assert isinstance(m.reducer, MultipleReducers)
    assert sorted(m.reducer.reducers.keys()) == ["neg_loss", "pos_loss"]
    assert all(type(r) is MeanReducer for r in m.reducer.reducers.values())
    reducer = SumReducer()
    m = TwoSubLosses(reducer=reducer)
    subs = list(m.reducer.reducers.values())
    assert all(type(r) is SumReducer for r in subs)
    assert subs[0] is not subs[1] and reducer not in subs  # one independent copy each


def test_distance_default_and_given():
    m = ModuleWithRecordsAndDistance()
    assert type(m.distance) is LpDistance
    assert m.distance.p == 2 and m.distance.power == 1 and m.distance.normalize_embeddings
    dist = CosineSimilarity()
    assert ModuleWithRecordsAndDistance(distance=dist).distance is dist


def test_reducer_and_distance_combined():
    dist = CosineSimilarity()
    m = ModuleWithRecordsReducerAndDistance(distance=dist, reducer=SumReducer(), collect_stats=True)
    assert m.distance is dist and type(m.reducer) is SumReducer and m.collect_stats is True
