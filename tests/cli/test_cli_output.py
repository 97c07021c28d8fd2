"""What the ``deepmetric`` command prints and documents: line-buffered epoch lines, progress bars
only for a terminal, no spurious warnings, honest notes in the report, docs that match the
command flag by flag."""

import logging
import os
import queue
import re
import threading

import pytest
from _cli_helpers import ROOT, command_env, digits_config, popen_cli

from deepmetric.cli import pipeline
from deepmetric.cli.main import build_parser, main, show_progress

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def cheap_projection(monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")


def test_epoch_lines_reach_a_pipe_while_the_run_goes_on(tmp_path):
    # a pipe is block-buffered unless the command asks otherwise: the first line would then arrive
    # only once dozens of epochs had filled the buffer
    out = tmp_path / "run"
    env = command_env()
    env.pop("PYTHONUNBUFFERED", None)  # as in a plain shell
    proc = popen_cli("train", digits_config(tmp_path, 10_000), "--output", str(out), env=env)
    lines = queue.Queue()

    def first_line():
        line = proc.stdout.readline()
        lines.put((line, (out / "history.csv").read_text().count("\n") - 1))

    threading.Thread(target=first_line, daemon=True).start()
    try:
        first, epochs_done = lines.get(timeout=300)
        assert proc.poll() is None, "the run ended before its first line arrived"
        assert "epoch 1/10000" in first, first
        assert epochs_done <= 3, f"the first line arrived after {epochs_done} epochs"
    finally:
        proc.kill()
        proc.wait(timeout=30)


class Terminal:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_bars_only_for_a_terminal_and_not_when_quiet(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    assert show_progress(False, Terminal(True)) is True
    assert show_progress(True, Terminal(True)) is False
    assert show_progress(False, Terminal(False)) is False
    assert show_progress(False, object()) is False
    monkeypatch.setenv("TERM", "dumb")
    assert show_progress(False, Terminal(True)) is False


def test_a_run_shows_progress_bars_when_asked(tmp_path, capsys):
    pipeline.train_command(digits_config(tmp_path, 1), str(tmp_path / "run"), progress=True)
    captured = capsys.readouterr()
    assert re.search(r"epoch 1: 100%\|.*\| (\d+)/\1 ", captured.err), captured.err[-500:]
    pipeline.train_command(digits_config(tmp_path, 1), str(tmp_path / "quiet"), quiet=True)
    captured = capsys.readouterr()
    assert captured.err == "" and "epoch 1/1" not in captured.out and "raw inputs (baseline)" in captured.out


def test_a_run_warns_about_nothing(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    assert main(["train", digits_config(tmp_path, 1), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    assert "missing" not in capsys.readouterr().err


def test_an_interrupted_run_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_command", interrupted)
    assert main(["train", "--output", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.strip() == (
        f"deepmetric: interrupted; continue with: deepmetric train --output {tmp_path / 'run'} --resume"
    )


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--output", str(tmp_path), "--resume", "--overwrite"])
    assert exit.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def section(trained, baseline):
    return {"trained": trained, "baseline_raw_inputs": baseline}


def test_the_worse_than_raw_note_explains_the_section_it_is_about():
    worse = section({"mean_average_precision_at_r": 0.3}, {"mean_average_precision_at_r": 0.6})
    zero_shot = " ".join(pipeline._notes("zero_shot", worse))
    held_out = " ".join(pipeline._notes("held_out", worse))
    assert "do not transfer" in zero_shot and "unseen classes" in zero_shot
    assert "transfer" not in held_out and "classes it was trained on" in held_out
    better = section({"mean_average_precision_at_r": 0.7}, {"mean_average_precision_at_r": 0.6})
    assert pipeline._notes("held_out", better) == [] and pipeline._notes("zero_shot", better) == []


def docs(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def parser_flags():
    parser = build_parser()
    flags = {opt for action in parser._actions for opt in action.option_strings}
    for sub in parser._subparsers._group_actions[0].choices.values():
        flags |= {opt for action in sub._actions for opt in action.option_strings}
    return sorted(flags - {"-h", "--help"})


def test_docs_describe_every_flag_exit_status_and_output_file():
    text = docs("docs/cli.md")
    for flag in parser_flags():
        assert f"`{flag}" in text, flag
    for status in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert status in text, status
    for name in pipeline.RUN_FILES:
        assert f"`{name}" in text, name
    for name in ("embeddings.pt", "embeddings.png", "retrieval.png", "evaluation.json"):
        assert name in text, name


def test_readme_config_keys_are_the_defaults():
    from deepmetric.cli.config import DEFAULT_CONFIG

    readme = docs("README.md")
    block = readme[readme.index("### Config keys"):readme.index("Not usable in a config")]
    for key in DEFAULT_CONFIG:
        assert re.search(rf"^{key}:", block, re.M), key
    for key in DEFAULT_CONFIG["evaluation"]:
        assert re.search(rf"^  {key}:", block, re.M), key
    assert "name: Glyphs" in block and "m: 4" in block and "epochs: 8" in block


def test_commands_run_in_process_give_the_caller_its_library_generator_back(tmp_path):
    # the run seeds a private generator for the samplers; a test (or a notebook) that calls the
    # command functions directly must not be left with it
    from deepmetric.utils import common_functions as c_f

    mine = c_f.NUMPY_RANDOM
    run = tmp_path / "run"
    pipeline.train_command(digits_config(tmp_path, 1), str(run), quiet=True)
    assert c_f.NUMPY_RANDOM is mine
    pipeline.evaluate_command(str(run), log=lambda *a: None)
    assert c_f.NUMPY_RANDOM is mine
