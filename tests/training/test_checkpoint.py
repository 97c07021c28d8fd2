import os
import random

import numpy as np
import pytest
import torch

from deepmetric.training import checkpoint as ckpt
from deepmetric.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from deepmetric.utils import common_functions as c_f


def _names(folder):
    return sorted(n for n in os.listdir(folder))


def test_save_then_load_round_trips_tensors_and_numbers(tmp_path):
    state = {"epoch": 3, "models": {"trunk": {"w": torch.arange(4.0)}}, "name": "x", "lst": [1, 2.5]}
    path = save_checkpoint(str(tmp_path), state, 3)
    assert os.path.basename(path) == "checkpoint_00000003.pt"
    loaded, loaded_path = load_checkpoint(str(tmp_path))
    assert loaded_path == path
    assert loaded["epoch"] == 3 and loaded["name"] == "x" and loaded["lst"] == [1, 2.5]
    assert torch.equal(loaded["models"]["trunk"]["w"], torch.arange(4.0))


def test_keeps_only_the_newest_keep_checkpoints(tmp_path):
    for i in range(1, 6):
        save_checkpoint(str(tmp_path), {"epoch": i}, i, keep=2)
    assert _names(tmp_path) == ["checkpoint_00000004.pt", "checkpoint_00000005.pt"]
    assert load_checkpoint(str(tmp_path))[0]["epoch"] == 5


def test_keep_one_leaves_only_the_new_file(tmp_path):
    save_checkpoint(str(tmp_path), {"epoch": 1}, 1, keep=1)
    save_checkpoint(str(tmp_path), {"epoch": 2}, 2, keep=1)
    assert _names(tmp_path) == ["checkpoint_00000002.pt"]


def test_a_new_checkpoint_with_a_lower_counter_is_never_pruned_itself(tmp_path):
    save_checkpoint(str(tmp_path), {"epoch": 9}, 9)
    save_checkpoint(str(tmp_path), {"epoch": 8}, 8)
    path = save_checkpoint(str(tmp_path), {"epoch": 1}, 1)
    assert os.path.exists(path)
    assert len(_names(tmp_path)) == 2


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    save_checkpoint(str(tmp_path), {"epoch": 1, "w": torch.ones(1000)}, 1)
    newest = save_checkpoint(str(tmp_path), {"epoch": 2, "w": torch.ones(1000)}, 2)
    size = os.path.getsize(newest)
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    state, path = load_checkpoint(str(tmp_path))
    assert state["epoch"] == 1
    assert path.endswith("checkpoint_00000001.pt")


def test_garbage_newest_checkpoint_falls_back(tmp_path):
    save_checkpoint(str(tmp_path), {"epoch": 1}, 1)
    with open(ckpt.checkpoint_path(str(tmp_path), 2), "wb") as f:
        f.write(b"not a checkpoint")
    assert load_checkpoint(str(tmp_path))[0]["epoch"] == 1


def test_no_usable_checkpoint_raises_checkpoint_error_listing_the_files(tmp_path):
    with open(ckpt.checkpoint_path(str(tmp_path), 1), "wb") as f:
        f.write(b"")
    with pytest.raises(CheckpointError, match="checkpoint_00000001.pt"):
        load_checkpoint(str(tmp_path))
    assert issubclass(CheckpointError, ValueError)


def test_empty_or_missing_folder_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "missing"))


def test_a_checkpoint_that_is_not_a_dict_is_skipped(tmp_path):
    save_checkpoint(str(tmp_path), {"epoch": 1}, 1)
    torch.save([1, 2], ckpt.checkpoint_path(str(tmp_path), 2))
    assert load_checkpoint(str(tmp_path))[0]["epoch"] == 1


def test_stale_temporary_files_are_removed_and_never_loaded(tmp_path):
    stale = tmp_path / ".checkpoint_tmp_00000007_123"
    stale.write_bytes(b"half written")
    save_checkpoint(str(tmp_path), {"epoch": 1}, 1)
    assert _names(tmp_path) == ["checkpoint_00000001.pt"]


def test_failed_write_leaves_previous_checkpoint_and_no_temp_file(tmp_path):
    save_checkpoint(str(tmp_path), {"epoch": 1}, 1)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(str(tmp_path), {"epoch": 2, "bad": Unpicklable()}, 2)
    assert _names(tmp_path) == ["checkpoint_00000001.pt"]
    assert load_checkpoint(str(tmp_path))[0]["epoch"] == 1


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_bad_keep_is_rejected(tmp_path, keep):
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(str(tmp_path), {}, 1, keep=keep)


def test_bad_counter_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="counter"):
        save_checkpoint(str(tmp_path), {}, -1)


def test_map_location_is_applied(tmp_path):
    save_checkpoint(str(tmp_path), {"w": torch.ones(2)}, 1)
    state, _ = load_checkpoint(str(tmp_path), map_location="cpu")
    assert state["w"].device.type == "cpu"


def _draw_all():
    return (
        random.random(),
        float(np.random.rand()),
        float(torch.rand(1)),
        float(c_f.NUMPY_RANDOM.rand()) if hasattr(c_f.NUMPY_RANDOM, "rand") else float(c_f.NUMPY_RANDOM.random()),
    )


@pytest.mark.parametrize("source", ["module", "random_state", "generator"])
def test_rng_states_survive_a_checkpoint_round_trip(tmp_path, monkeypatch, source):
    if source == "random_state":
        monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(5))
    elif source == "generator":
        monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.default_rng(5))
    np.random.normal()  # leaves a cached gaussian in numpy's global state
    save_checkpoint(str(tmp_path), {"rng": ckpt.get_rng_states()}, 1)
    expected = _draw_all()
    _draw_all()
    state, _ = load_checkpoint(str(tmp_path))  # weights_only loading accepts the states
    ckpt.set_rng_states(state["rng"])
    assert _draw_all() == expected


def test_set_rng_states_with_a_different_numpy_source_warns_and_keeps_going(monkeypatch, caplog):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    states = ckpt.get_rng_states()
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.default_rng(0))
    before = float(torch.rand(1))
    ckpt.set_rng_states(states)
    assert "not restored" in caplog.text
    assert float(torch.rand(1)) == before
