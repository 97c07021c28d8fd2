import pytest
import torch
from _miner_helpers import line

from deepmetric.distances import LpDistance
from deepmetric.miners import BaseMiner
from deepmetric.utils import common_functions as c_f
from deepmetric.utils.errors import ArgumentError


class _FixedMiner(BaseMiner):
    def __init__(self, output, **kwargs):
        super().__init__(**kwargs)
        self.output = output
        self.seen = None

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        self.seen = (embeddings, labels, ref_emb, ref_labels)
        return self.output


def _t(*v):
    return torch.tensor(v, dtype=torch.long)


def test_default_distance_is_normalised_l2():
    miner = _FixedMiner((_t(), _t(), _t()))
    assert isinstance(miner.distance, LpDistance)
    assert miner.distance.normalize_embeddings and miner.distance.p == 2 and miner.distance.power == 1


def test_counters_are_set_even_without_stats(dtype):
    miner = _FixedMiner((_t(0, 1), _t(1, 0), _t(0), _t(2)), collect_stats=False)
    miner(line(0, 1, 2, dtype=dtype), _t(0, 0, 1))
    assert (miner.num_pos_pairs, miner.num_neg_pairs) == (2, 1)
    assert "num_pos_pairs" not in getattr(miner, "_record_these_stats", [])
    triplet_miner = _FixedMiner((_t(0), _t(1), _t(2)))
    triplet_miner(line(0, 1, 2, dtype=dtype), _t(0, 0, 1))
    assert triplet_miner.num_triplets == 1


def test_counters_are_stats_when_collecting():
    miner = _FixedMiner((_t(0), _t(1), _t(2)), collect_stats=True)
    assert {"num_pos_pairs", "num_neg_pairs", "num_triplets"} <= set(miner._record_these_stats)


def test_reference_set_defaults_to_the_batch_itself():
    miner = _FixedMiner((_t(), _t(), _t()))
    emb, labels = line(0, 1), _t(0, 1)
    miner(emb, labels)
    assert miner.seen[2] is emb and miner.seen[3] is labels


def test_unequal_output_lengths_are_rejected():
    with pytest.raises(ArgumentError, match="different lengths"):
        _FixedMiner((_t(0), _t(1), _t()))(line(0, 1), _t(0, 1))
    with pytest.raises(ArgumentError, match="mismatched"):
        _FixedMiner((_t(0), _t(), _t(0), _t(1)))(line(0, 1), _t(0, 1))


def test_output_of_wrong_arity_is_a_type_error():
    with pytest.raises(TypeError, match="3 .*or 4"):
        _FixedMiner((_t(0), _t(1)))(line(0, 1), _t(0, 1))


def test_bad_inputs_are_rejected():
    miner = _FixedMiner((_t(), _t(), _t()))
    with pytest.raises(ValueError, match="requires labels"):
        miner(line(0, 1), None)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        miner(line(0, 1), _t(0, 1, 2))
    with pytest.raises(TypeError, match="real dtype"):
        miner(line(0, 1), torch.tensor([0j, 1j]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        miner(line(0, float("nan")), _t(0, 1))
    with pytest.raises(IndexError, match="pass ref_labels"):
        miner(line(0, 1), _t(0, 1), line(2, 3, 4))


def test_mine_is_abstract():
    with pytest.raises(NotImplementedError):
        BaseMiner()(line(0, 1), _t(0, 1))


def test_collect_stats_default_follows_global(monkeypatch):
    monkeypatch.setattr(c_f, "COLLECT_STATS", True)
    assert _FixedMiner(None).collect_stats is True
