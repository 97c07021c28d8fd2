"""The ``deepmetric`` command end to end on tiny configs: train, model selection, evaluate, an
interrupted run (SIGKILL) resumed to the same result, and what a run folder may be used for."""

import json
import os
import signal
import time

import pytest
import torch
from _cli_helpers import DIGITS_CONFIG, digits_config, glyphs_config, popen_cli, run_cli, write_config

from deepmetric.cli.main import main

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def cheap_projection(monkeypatch):
    # the pictures themselves are tested in test_cli_report.py
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")


def read_json(path):
    return json.loads(path.read_text())


def test_train_writes_the_run_folder_and_training_beats_the_raw_baseline(tmp_path):
    from deepmetric.utils import common_functions as c_f

    out = tmp_path / "run"
    library_rng = c_f.NUMPY_RANDOM
    assert main(["train", digits_config(tmp_path, 3), "--output", str(out), "--quiet"]) == 0
    # the run's private sampler RNG does not outlive the in-process call
    assert c_f.NUMPY_RANDOM is library_rng
    for name in ("config.yaml", "metrics.json", "history.csv", "report.md", "checkpoints", "model.pt",
                 "held_out/embeddings.pt"):
        assert (out / name).exists(), name
    metrics = read_json(out / "metrics.json")
    assert set(metrics) == {"held_out", "selection", "seconds", "threshold"}  # the test split shares the classes
    trained, baseline = metrics["held_out"]["trained"], metrics["held_out"]["baseline_raw_inputs"]
    assert set(trained) == {"precision_at_1", "mean_average_precision_at_r"}
    assert trained["mean_average_precision_at_r"] > baseline["mean_average_precision_at_r"]
    history = (out / "history.csv").read_text().splitlines()
    assert history[0] == ("epoch,loss,lr,validation_precision_at_1,validation_mean_average_precision_at_r,"
                          "selected_epoch")
    assert len(history) == 4


def test_the_selected_model_is_the_best_validation_epoch_and_is_what_is_reported(tmp_path):
    out = tmp_path / "run"
    assert main(["train", digits_config(tmp_path, 4), "--output", str(out), "--quiet"]) == 0
    rows = [line.split(",") for line in (out / "history.csv").read_text().splitlines()[1:]]
    scores = [float(r[4]) for r in rows]
    best = 1 + max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first of equal scores
    selection = read_json(out / "metrics.json")["selection"]
    assert selection["epoch"] == best and int(rows[-1][5]) == best
    assert selection["value"] == pytest.approx(max(scores))
    assert selection["epochs_trained"] == 4
    # the figures of metrics.json are those of model.pt, which `evaluate` re-measures
    assert main(["evaluate", "--output", str(out)]) == 0
    evaluated = read_json(out / "evaluation.json")
    trained = read_json(out / "metrics.json")["held_out"]["trained"]
    assert evaluated == {"held_out": pytest.approx(trained, abs=1e-6)}


def test_early_stopping_keeps_the_best_epoch(tmp_path, capsys):
    # lr 0 and no hidden layer (so no batch-norm statistics either): the model never changes, so
    # no epoch after the first is better
    text = DIGITS_CONFIG.format(epochs=10).replace("name: Adam, args: {lr: 0.01}", "name: SGD, args: {lr: 0.0}")
    text = text.replace("hidden_sizes: [32]", "hidden_sizes: []")
    text += "evaluation: {metrics: [precision_at_1], k: null, zero_shot: false, select: precision_at_1, patience: 2}\n"
    out = tmp_path / "run"
    assert main(["train", write_config(tmp_path, text), "--output", str(out)]) == 0
    assert "early stop: no better validation precision_at_1 for 2 epochs; keeping epoch 1" in capsys.readouterr().out
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3
    selection = read_json(out / "metrics.json")["selection"]
    assert selection["epoch"] == 1 and selection["epochs_trained"] == 3
    # a stopped run resumed has nothing left to train
    assert main(["train", "--output", str(out), "--resume"]) == 0
    assert "stopped early after epoch 3" in capsys.readouterr().out


def test_glyphs_default_recipe_reports_zero_shot_and_held_out_sections(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", glyphs_config(tmp_path, 1), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = read_json(out / "metrics.json")
    assert metrics["zero_shot"]["classes"] == 64 and metrics["zero_shot"]["items"] == 640
    assert metrics["held_out"]["classes"] == 67 and metrics["held_out"]["items"] == 134
    for section in ("zero_shot", "held_out"):
        assert set(metrics[section]) >= {"trained", "baseline_raw_inputs"}
        assert section in printed
    assert "raw inputs (baseline)" in printed and printed.rstrip().endswith("report.md")
    assert metrics["selection"]["validation_items"] == 134
    report = (out / "report.md").read_text()
    assert "Zero-shot: classes the model never saw" in report and "Model selection: the weights of epoch 1" in report


def test_digits_reports_its_zero_shot_section_with_the_same_model_selection(tmp_path, capsys):
    text = DIGITS_CONFIG.format(epochs=2).replace("args: {protocol: held_out_samples}", "args: {}")
    text = text.replace("zero_shot: false", "zero_shot: true")
    out = tmp_path / "run"
    assert main(["train", write_config(tmp_path, text), "--output", str(out), "--quiet"]) == 2
    assert "config key 'sampler.args.m': m=4 x 5 training classes = 20 items, fewer than batch_size 40" in \
        capsys.readouterr().err
    text = text.replace("args: {m: 4}", "args: {m: 8}")
    assert main(["train", write_config(tmp_path, text), "--output", str(out), "--quiet"]) == 0
    metrics = read_json(out / "metrics.json")
    assert metrics["zero_shot"]["classes"] == 5 and metrics["held_out"]["classes"] == 5
    assert metrics["selection"]["metric"] == "validation mean_average_precision_at_r"
    assert {int(x) for x in torch.load(out / "zero_shot" / "embeddings.pt")["labels"].unique()} == {5, 6, 7, 8, 9}


def test_evaluate_takes_a_section(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", glyphs_config(tmp_path, 1), "--output", str(out), "--quiet"]) == 0
    metrics = read_json(out / "metrics.json")
    assert main(["evaluate", "--output", str(out), "--section", "zero_shot"]) == 0
    assert read_json(out / "evaluation.json") == {"zero_shot": pytest.approx(metrics["zero_shot"]["trained"])}
    assert main(["evaluate", "--output", str(out)]) == 0
    assert set(read_json(out / "evaluation.json")) == {"zero_shot", "held_out"}
    capsys.readouterr()
    digits_out = tmp_path / "digits"
    assert main(["train", digits_config(tmp_path, 1), "--output", str(digits_out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--output", str(digits_out), "--section", "zero_shot"]) == 2
    assert "this run has no zero_shot section (it has: held_out)" in capsys.readouterr().err


def test_training_into_a_run_needs_overwrite_and_keeps_the_run_otherwise(tmp_path, capsys):
    out = tmp_path / "run"
    config = digits_config(tmp_path, 1)
    assert main(["train", config, "--output", str(out), "--quiet"]) == 0
    before = sorted(os.listdir(out / "checkpoints"))
    stamp = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["train", config, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (finished); pass --resume to continue it or --overwrite to replace it" in err
    assert sorted(os.listdir(out / "checkpoints")) == before and (out / "metrics.json").read_text() == stamp
    # a config error with --overwrite leaves the old run alone too
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = write_config(bad_dir, "loss: NoSuchLoss\n")
    assert main(["train", bad, "--output", str(out), "--overwrite"]) == 2
    assert (out / "metrics.json").read_text() == stamp
    (out / "notes.txt").write_text("mine")
    assert main(["train", config, "--output", str(out), "--overwrite", "--epochs", "2", "--quiet"]) == 0
    assert len((out / "history.csv").read_text().splitlines()) == 3
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite deletes only what a run writes
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2\n")
    assert main(["train", config, "--output", str(other)]) == 2
    assert "is a folder with other files in it" in capsys.readouterr().err


def test_resume_says_where_it_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", digits_config(tmp_path, 2), "--output", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--output", str(out), "--resume", "--epochs", "3"]) == 0
    printed = capsys.readouterr().out
    checkpoint = os.path.join(str(out), "checkpoints", "checkpoint_00000002.pt")
    assert f"resuming {out} after epoch 2 of 3 from {checkpoint}" in printed
    assert "epoch 3/3" in printed and "epoch 2/3" not in printed
    assert main(["train", digits_config(tmp_path, 2), "--output", str(out), "--resume"]) == 2
    assert "drop the config argument" in capsys.readouterr().err


def test_a_failed_start_leaves_no_folder_and_a_run_without_a_model_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    bad = write_config(tmp_path, DIGITS_CONFIG.format(epochs=1).replace("ContrastiveLoss", "ContrastivLoss"))
    assert main(["train", bad, "--output", str(out)]) == 2
    assert "did you mean 'ContrastiveLoss'" in capsys.readouterr().err
    assert not out.exists()
    # a run killed before its first epoch ended: config.yaml but no model
    assert main(["train", digits_config(tmp_path, 1), "--output", str(out), "--quiet"]) == 0
    (out / "model.pt").unlink()
    capsys.readouterr()
    assert main(["evaluate", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds no trained model yet (no epoch finished); continue the run with" in err
    assert "config key" not in err


def _checkpoints(folder):
    if not folder.exists():
        return []
    return [name for name in os.listdir(folder) if not name.startswith(".") and not name.endswith(".tmp")]


def test_a_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path):
    epochs = 4
    config = digits_config(tmp_path, epochs)
    straight = tmp_path / "straight"
    proc = popen_cli("train", config, "--output", str(straight))
    assert proc.wait(timeout=300) == 0, proc.stderr.read()

    interrupted = tmp_path / "interrupted"
    proc = popen_cli("train", config, "--output", str(interrupted))
    deadline = time.time() + 120
    while not _checkpoints(interrupted / "checkpoints") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (interrupted / "metrics.json").exists()

    resumed = run_cli("train", "--output", str(interrupted), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    expected = read_json(straight / "metrics.json")
    got = read_json(interrupted / "metrics.json")
    assert got["held_out"]["trained"] == pytest.approx(expected["held_out"]["trained"], abs=1e-6)
    assert got["selection"]["epoch"] == expected["selection"]["epoch"]
    history = (interrupted / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(1, epochs + 1)]
