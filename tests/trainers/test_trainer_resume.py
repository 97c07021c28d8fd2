"""Checkpointing and resuming: an interrupted run, resumed, ends with the same weights as an
uninterrupted one (in-process interruptions and a real SIGKILL of a child process)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from _resume_helpers import DIM, assert_same, build, dataset, weights

import deepmetric
from deepmetric import losses, trainers
from deepmetric.training import checkpoint as ckpt
from deepmetric.utils import common_functions as c_f

VARIANTS = ["seeded", "m_per_class_unseeded", "shuffle_unseeded_uneven", "workers"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_epochs_then_resume_equals_four_straight(tmp_path, variant):
    np.random.seed(0)
    straight = build(variant)
    straight.train(num_epochs=4)
    expected = weights(straight)

    np.random.seed(0)
    first = build(variant, folder=str(tmp_path))
    first.train(num_epochs=2)
    # perturb every RNG and start from different initial weights: the checkpoint must restore all
    torch.manual_seed(12345)
    np.random.seed(54321)
    second = build(variant, folder=str(tmp_path), resume=True, init_seed=99)
    second.train(start_epoch=1, num_epochs=4)
    assert second.epoch == 4
    assert_same(weights(second), expected)


def test_resuming_after_every_epoch_equals_straight(tmp_path):
    straight = build("seeded")
    straight.train(num_epochs=3)
    for n in (1, 2, 3):
        torch.manual_seed(n)
        build("seeded", folder=str(tmp_path), resume=n > 1, init_seed=0 if n == 1 else n).train(num_epochs=n)
    final = build("seeded")
    state, _ = ckpt.load_checkpoint(str(tmp_path))
    for k, m in final.models.items():
        m.load_state_dict(state["models"][k])
    assert_same({k: v for k, v in weights(final).items() if k.startswith("model")},
                {k: v for k, v in weights(straight).items() if k.startswith("model")})


def test_checkpoint_layout(tmp_path):
    t = build("seeded", folder=str(tmp_path))
    t.train(num_epochs=3)
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint_00000002.pt", "checkpoint_00000003.pt"]
    state, path = ckpt.load_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_00000003.pt")
    assert state["epoch"] == 3 and state["iterations_per_epoch"] == 4 and state["global_iteration"] == 11
    assert set(state["models"]) == {"trunk", "embedder"}
    assert torch.equal(state["models"]["trunk"]["0.weight"], t.models["trunk"][0].weight)
    assert set(state["optimizers"]) == {"trunk_optimizer", "embedder_optimizer", "metric_loss_optimizer"}
    assert set(state["lr_schedulers"]) == {"trunk_scheduler_by_epoch", "embedder_scheduler_by_iteration"}
    assert torch.equal(state["loss_funcs"]["metric_loss"]["seen"], t.loss_funcs["metric_loss"].seen)
    assert "tuple_miner" in state["mining_funcs"]
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["stopped_early"] is False


def test_checkpoint_keep_controls_how_many_remain(tmp_path):
    build("seeded", folder=str(tmp_path), checkpoint_keep=1).train(num_epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00000003.pt"]


def test_resume_without_any_checkpoint_starts_afresh(tmp_path):
    straight = build("seeded")
    straight.train(num_epochs=2)
    resumed = build("seeded", folder=str(tmp_path / "empty"), resume=True)
    resumed.train(num_epochs=2)
    assert_same(weights(resumed), weights(straight))


def test_a_fresh_run_deletes_old_checkpoints(tmp_path):
    build("seeded", folder=str(tmp_path)).train(num_epochs=3)
    build("seeded", folder=str(tmp_path)).train(num_epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00000001.pt"]


def test_early_stop_is_remembered_by_the_checkpoint(tmp_path):
    t = build("seeded", folder=str(tmp_path), end_of_epoch_hook=lambda tr: tr.epoch < 2)
    t.train(num_epochs=5)
    state, _ = ckpt.load_checkpoint(str(tmp_path))
    assert state["epoch"] == 2 and state["stopped_early"] is True
    calls = []
    resumed = build("seeded", folder=str(tmp_path), resume=True, end_of_iteration_hook=lambda tr: calls.append(1))
    resumed.train(num_epochs=5)
    assert calls == []


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_truncated(tmp_path):
    build("seeded", folder=str(tmp_path)).train(num_epochs=3)
    newest = ckpt.checkpoint_path(str(tmp_path), 3)
    with open(newest, "r+b") as f:
        f.truncate(100)
    epochs = []
    resumed = build("seeded", folder=str(tmp_path), resume=True, end_of_epoch_hook=lambda tr: epochs.append(tr.epoch))
    resumed.train(num_epochs=4)
    assert epochs == [3, 4]


def test_resume_with_only_corrupt_checkpoints_raises(tmp_path):
    os.makedirs(tmp_path, exist_ok=True)
    with open(ckpt.checkpoint_path(str(tmp_path), 1), "wb") as f:
        f.write(b"junk")
    with pytest.raises(ckpt.CheckpointError):
        build("seeded", folder=str(tmp_path), resume=True).train(num_epochs=2)


def test_daml_resume_equals_straight(tmp_path):
    def daml(folder=None, resume=False, init_seed=0):
        torch.manual_seed(init_seed)
        models = {"trunk": torch.nn.Linear(DIM, 6), "embedder": torch.nn.Linear(6, 4),
                  "generator": torch.nn.Linear(18, 6)}
        return trainers.DeepAdversarialMetricLearning(
            metric_alone_epochs=1,
            g_alone_epochs=1,
            g_triplets_per_anchor=2,
            models=models,
            optimizers={f"{k}_optimizer": torch.optim.SGD(m.parameters(), lr=0.05) for k, m in models.items()},
            batch_size=8,
            loss_funcs={"metric_loss": losses.TripletMarginLoss(), "synth_loss": losses.TripletMarginLoss(),
                        "g_adv_loss": losses.TripletMarginLoss()},
            dataset=dataset(),
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
            progress_bar=False,
            seed=1,
            checkpoint_folder=folder,
            resume=resume,
        )

    straight = daml()
    straight.train(num_epochs=4)
    daml(folder=str(tmp_path)).train(num_epochs=2)
    resumed = daml(folder=str(tmp_path), resume=True, init_seed=5)
    resumed.train(num_epochs=4)
    for k in straight.models:
        assert torch.equal(straight.models[k].weight, resumed.models[k].weight), k


def test_library_numpy_generator_state_is_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    straight = build("m_per_class_unseeded")
    straight.train(num_epochs=3)
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    build("m_per_class_unseeded", folder=str(tmp_path)).train(num_epochs=1)
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(77))
    resumed = build("m_per_class_unseeded", folder=str(tmp_path), resume=True)
    resumed.train(num_epochs=3)
    assert_same(weights(resumed), weights(straight))


# ------------------------------------------------------------------------------------------------
# a real crash: SIGKILL a child process mid-epoch, then resume


CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from _resume_helpers import build

    folder, resume, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]

    def slow(trainer):
        time.sleep(0.06)

    t = build("seeded", folder=folder if folder != "-" else None, resume=resume, init_seed=7 if resume else 0,
              end_of_iteration_hook=slow)
    t.train(num_epochs=6)
    torch.save({{k: m.state_dict() for k, m in t.models.items()}}, out)
    """
)


def _child_env():
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(deepmetric.__file__))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_for(path, proc, timeout=120):
    start = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read().decode()}")
        if time.time() - start > timeout:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.01)


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=os.path.dirname(os.path.dirname(__file__))))
    env = _child_env()
    run = [sys.executable, str(script)]

    straight_out = tmp_path / "straight.pt"
    subprocess.run(run + ["-", "0", str(straight_out)], env=env, check=True, timeout=300, capture_output=True)

    folder = tmp_path / "ckpt"
    out = tmp_path / "resumed.pt"
    for resume, wait_epoch in ((False, 2), (True, 4)):
        proc = subprocess.Popen(run + [str(folder), "1" if resume else "0", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(ckpt.checkpoint_path(str(folder), wait_epoch), proc)
        time.sleep(0.1)  # well inside the next epoch (4 iterations of >= 60 ms each)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()
        # whatever was on disk at the kill is a complete checkpoint
        for _, path in ckpt.list_checkpoints(str(folder)):
            state = torch.load(path, weights_only=True)
            assert state["epoch"] >= wait_epoch - 1
        assert not [n for n in os.listdir(folder) if not n.startswith("checkpoint_")]

    subprocess.run(run + [str(folder), "1", str(out)], env=env, check=True, timeout=300, capture_output=True)
    expected = torch.load(straight_out, weights_only=True)
    got = torch.load(out, weights_only=True)
    for k in expected:
        for n in expected[k]:
            assert torch.equal(expected[k][n], got[k][n]), (k, n)


def test_a_second_train_call_keeps_the_checkpoints_of_the_first(tmp_path):
    t = build("seeded", folder=str(tmp_path))
    t.train(start_epoch=1, num_epochs=2)
    t.train(start_epoch=3, num_epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00000002.pt", "checkpoint_00000003.pt"]
    epochs = []
    resumed = build("seeded", folder=str(tmp_path), resume=True, end_of_epoch_hook=lambda tr: epochs.append(tr.epoch))
    resumed.train(num_epochs=4)
    assert epochs == [4]
