"""The ``deepmetric`` command under torchrun: ``batch_size`` is the global batch, split per
process with a message naming both numbers; the default recipe runs with 2 gloo processes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from _cli_helpers import DIGITS_CONFIG, command_env, write_config

from deepmetric.cli import distributed
from deepmetric.cli.config import ConfigError
from deepmetric.samplers import MPerClassSampler
from deepmetric.utils import common_functions as c_f

pytest.importorskip("sklearn")


def sampler(labels, batch):
    return MPerClassSampler(labels, 4, batch_size=batch, length_before_new_iter=len(labels), num_replicas=1, rank=0)


def test_a_pass_depends_on_seed_and_epoch_alone():
    # MPerClassSampler shuffles its class order in place from pass to pass; a resumed run starts
    # from a fresh sampler and must still draw what the uninterrupted run drew
    labels = np.repeat(np.arange(10), 8)
    straight = distributed.GlobalBatches(sampler(labels, 16), 16, seed=5)
    for epoch in range(3):
        straight.set_epoch(epoch)
        straight.global_batches()
    straight.set_epoch(3)
    resumed = distributed.GlobalBatches(sampler(labels, 16), 16, seed=5)
    resumed.set_epoch(3)
    np.testing.assert_array_equal(straight.global_batches(), resumed.global_batches())


def test_each_process_takes_its_rows_of_the_same_global_batches():
    labels = np.repeat(np.arange(10), 8)
    whole = distributed.GlobalBatches(sampler(labels, 16), 16, seed=5)
    whole.set_epoch(3)
    expected = whole.global_batches()
    shares = []
    for rank in range(2):
        share = distributed.GlobalBatches(sampler(labels, 16), 16, seed=5, world_size=2, rank=rank)
        share.set_epoch(3)
        c_f.NUMPY_RANDOM.rand(rank + 1)  # whatever else each process draws does not matter
        shares.append(np.asarray(list(share)).reshape(-1, 8))
        assert len(share) == len(expected) * 8
    np.testing.assert_array_equal(np.concatenate(shares, axis=1), expected)
    # every global batch keeps MPerClassSampler's shape: 4 classes x 4 items
    for batch in expected:
        _, counts = np.unique(labels[batch], return_counts=True)
        assert sorted(counts) == [4, 4, 4, 4]
    whole.set_epoch(4)
    assert not np.array_equal(whole.global_batches(), expected)


def test_a_batch_that_does_not_split_names_both_numbers(monkeypatch):
    monkeypatch.setattr(distributed, "world_and_rank", lambda: (3, 0))
    with pytest.raises(ConfigError) as err:
        distributed.per_process_batch_size(128)
    assert str(err.value) == ("config key 'batch_size': the global batch of 128 cannot be split evenly over 3 "
                              "processes; use a multiple of 3")
    assert distributed.per_process_batch_size(129) == 43


def torchrun(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         "-m", "deepmetric", *args],
        capture_output=True, text=True, env=command_env(OMP_NUM_THREADS="1"), timeout=timeout,
    )


def test_torchrun_splits_the_global_batch_and_writes_one_run(tmp_path):
    # 48 = 3 classes x m 16 globally; 24 per process is no multiple of 16, and need not be
    text = DIGITS_CONFIG.format(epochs=2).replace("batch_size: 40", "batch_size: 48").replace("m: 4", "m: 16")
    out = tmp_path / "ddp"
    done = torchrun("train", write_config(tmp_path, text), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("batch_size 48 is the global batch: 2 processes x 24 items each") == 1
    metrics = json.loads((out / "metrics.json").read_text())["held_out"]
    assert metrics["trained"]["mean_average_precision_at_r"] > metrics["baseline_raw_inputs"]["mean_average_precision_at_r"]
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, written by rank 0 only
    assert done.stdout.count("report:") == 1


@pytest.mark.slow
def test_torchrun_runs_the_default_recipe(tmp_path):
    pytest.importorskip("matplotlib")
    # the default recipe with fewer drawings per character and one epoch
    text = "epochs: 1\ndataset: {name: Glyphs, args: {samples_per_class: 10}}\n"
    out = tmp_path / "ddp"
    done = torchrun("train", write_config(tmp_path, text), "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch_size 128 is the global batch: 2 processes x 64 items each" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"zero_shot", "held_out", "selection"}
