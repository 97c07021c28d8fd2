"""The ``deepmetric`` command end to end on a tiny digits config: train, evaluate, search, and an
interrupted run (SIGKILL) resumed to the same result as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from deepmetric.cli.main import main

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def cheap_projection(monkeypatch):
    # UMAP's first call compiles for tens of seconds; the pictures themselves are tested elsewhere.
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")

TINY_CONFIG = """
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


def write_config(folder, epochs):
    path = folder / "config.yaml"
    path.write_text(TINY_CONFIG.format(epochs=epochs))
    return str(path)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", "deepmetric", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_train_writes_the_run_folder_and_training_beats_the_raw_baseline(tmp_path):
    from deepmetric.utils import common_functions as c_f

    out = tmp_path / "run"
    library_rng = c_f.NUMPY_RANDOM
    assert main(["train", write_config(tmp_path, 3), "--output", str(out)]) == 0
    # the run's private sampler RNG does not outlive the in-process call
    assert c_f.NUMPY_RANDOM is library_rng
    for name in ("config.yaml", "metrics.json", "history.csv", "report.md", "checkpoints"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())["held_out"]
    trained, baseline = metrics["trained"], metrics["baseline_raw_inputs"]
    assert set(trained) == {"precision_at_1", "mean_average_precision_at_r"}
    assert trained["mean_average_precision_at_r"] > baseline["mean_average_precision_at_r"]
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss") and len(history) == 4


def test_evaluate_reproduces_the_trained_metrics_and_search_lists_neighbours(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", write_config(tmp_path, 2), "--output", str(out)]) == 0
    trained = json.loads((out / "metrics.json").read_text())["held_out"]["trained"]
    assert main(["evaluate", "--output", str(out)]) == 0
    evaluated = json.loads((out / "evaluation.json").read_text())
    assert evaluated == pytest.approx(trained, abs=1e-6)
    capsys.readouterr()
    assert main(["search", "--output", str(out), "--k", "3", "0", "5"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("query ") == 2 and printed.count("  1. item") == 2 and "  4. item" not in printed


def test_search_rejects_an_out_of_range_index(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", write_config(tmp_path, 1), "--output", str(out)]) == 0
    assert main(["search", "--output", str(out), "999999"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_resume_without_a_run_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "--output", str(tmp_path / "nothing"), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to resume" in err


def _checkpoints(folder):
    if not folder.exists():
        return []
    return [name for name in os.listdir(folder) if not name.startswith(".") and not name.endswith(".tmp")]


def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path):
    epochs = 6
    config = write_config(tmp_path, epochs)
    straight = tmp_path / "straight"
    proc = run_cli("train", config, "--output", str(straight))
    assert proc.wait(timeout=300) == 0, proc.stderr.read()

    interrupted = tmp_path / "interrupted"
    proc = run_cli("train", config, "--output", str(interrupted))
    deadline = time.time() + 120
    while not _checkpoints(interrupted / "checkpoints") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (interrupted / "metrics.json").exists()

    resumed = run_cli("train", "--output", str(interrupted), "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    expected = json.loads((straight / "metrics.json").read_text())["held_out"]["trained"]
    got = json.loads((interrupted / "metrics.json").read_text())["held_out"]["trained"]
    assert got == pytest.approx(expected, abs=1e-6)
    history = (interrupted / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(1, epochs + 1)]


def test_torchrun_with_two_processes_writes_one_run(tmp_path):
    config = write_config(tmp_path, 2)
    out = tmp_path / "ddp"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "deepmetric",
            "train",
            config,
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())["held_out"]
    assert (
        metrics["trained"]["mean_average_precision_at_r"]
        > metrics["baseline_raw_inputs"]["mean_average_precision_at_r"]
    )
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs, written by rank 0 only
    assert proc.stdout.count("report:") == 1
