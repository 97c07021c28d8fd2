"""Tiny configs and runners shared by the tests of the ``deepmetric`` command."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every digit in both splits: one held_out section, a few seconds per run.
DIGITS_CONFIG = """
seed: 3
epochs: {epochs}
batch_size: 40
dataset: {{name: Digits, args: {{protocol: held_out_samples}}}}
model: {{name: MLP, args: {{hidden_sizes: [32], embedding_size: 16}}}}
loss: ContrastiveLoss
miner: null
sampler: {{name: MPerClassSampler, args: {{m: 4}}}}
optimizer: {{name: Adam, args: {{lr: 0.01}}}}
scheduler: null
evaluation: {{metrics: [precision_at_1, mean_average_precision_at_r], k: null, zero_shot: false}}
"""

# The default recipe shrunk: 10 drawings per character (6 to train on, 2 validation, 2 held out).
GLYPHS_CONFIG = """
epochs: {epochs}
batch_size: 32
dataset: {{name: Glyphs, args: {{samples_per_class: 10}}}}
model: {{name: ConvNet, args: {{channels: [8], embedding_size: 8}}}}
"""


def write_config(folder, text, **fields):
    path = folder / "config.yaml"
    path.write_text(text.format(**fields) if fields else text)
    return str(path)


def digits_config(folder, epochs=1):
    return write_config(folder, DIGITS_CONFIG, epochs=epochs)


def glyphs_config(folder, epochs=1):
    pytest.importorskip("matplotlib")
    return write_config(folder, GLYPHS_CONFIG, epochs=epochs)


def command_env(**extra):
    paths = [os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p),
                DEEPMETRIC_PROJECTION="pca", **extra)


def popen_cli(*args, env=None, **kwargs):
    """``python -m deepmetric ARGS`` in a child process, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "deepmetric", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or command_env(), **kwargs,
    )


def run_cli(*args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "deepmetric", *args], capture_output=True, text=True,
        env=env or command_env(), timeout=timeout,
    )
