"""Fault injection: one training run crashed several times at random iterations (an exception
raised inside a hook, and SIGKILL of a child process), resumed after each crash, ends with the
weights of an uninterrupted run, and every checkpoint on disk stays loadable throughout."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from _resume_helpers import assert_same, build, weights

from deepmetric.training import checkpoint as ckpt

EPOCHS = 4
ITERATIONS = 4  # 32 samples, batches of 8


class InjectedCrash(RuntimeError):
    pass


def _all_checkpoints_load(folder):
    for _, path in ckpt.list_checkpoints(folder):
        torch.load(path, weights_only=True)  # raises on a corrupt or truncated file


@pytest.mark.parametrize("seed", [0, 1])
def test_exceptions_in_a_hook_at_random_iterations_then_resume(tmp_path, seed):
    straight = build("seeded")
    straight.train(num_epochs=EPOCHS)
    expected = weights(straight)

    rng = random.Random(seed)
    crash_points = sorted(rng.sample([(e, i) for e in range(1, EPOCHS + 1) for i in range(ITERATIONS)], 3))
    folder = str(tmp_path)
    remaining = list(crash_points)
    resume = False
    for _ in range(len(crash_points) + 1):

        def hook(trainer):
            if remaining and (trainer.epoch, trainer.iteration) == remaining[0]:
                remaining.pop(0)
                raise InjectedCrash(f"injected at {trainer.epoch}/{trainer.iteration}")

        # Once a checkpoint exists, start from different weights: the checkpoint must restore them.
        init_seed = rng.randrange(1, 1000) if ckpt.list_checkpoints(folder) else 0
        trainer = build(
            "seeded", folder=folder, resume=resume, init_seed=init_seed, end_of_iteration_hook=hook
        )
        try:
            trainer.train(num_epochs=EPOCHS)
            break
        except InjectedCrash:
            _all_checkpoints_load(folder)
            resume = True
    assert not remaining, "not every injected crash happened"
    assert trainer.epoch == EPOCHS
    assert_same(weights(trainer), expected)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    from _resume_helpers import build, weights
    folder, resume, kill_epoch, kill_iteration, out = sys.argv[1:6]
    kill_at = (int(kill_epoch), int(kill_iteration))

    def hook(trainer):
        if (trainer.epoch, trainer.iteration) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = build("seeded", folder=folder, resume=resume == "1", end_of_iteration_hook=hook)
    trainer.train(num_epochs={epochs})
    torch.save(weights(trainer), out)
    """
)


def test_sigkill_at_random_iterations_several_times_then_resume(tmp_path):
    straight = build("seeded")
    straight.train(num_epochs=EPOCHS)
    expected = weights(straight)

    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=os.path.dirname(os.path.dirname(__file__)), epochs=EPOCHS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]))
    folder, out = str(tmp_path / "ckpt"), str(tmp_path / "final.pt")
    kills = [(1, 2), (2, 3), (4, 0)]
    for n, (epoch, iteration) in enumerate(kills + [(0, 0)]):
        args = [sys.executable, str(script), folder, "1" if n else "0", str(epoch), str(iteration), out]
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        if n < len(kills):
            assert proc.returncode == -signal.SIGKILL, proc.stderr[-1500:]
            _all_checkpoints_load(folder)
        else:
            assert proc.returncode == 0, proc.stderr[-1500:]
    assert_same(torch.load(out), expected)
