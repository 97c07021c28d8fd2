"""The run report's pieces: 2-D projections, the two pictures, the history CSV and TensorBoard."""

import json

import numpy as np
import pytest

from deepmetric.cli import report


def blobs(n=60, d=5, seed=0):
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % 3
    return rng.randn(3, d)[labels] * 4 + rng.randn(n, d), labels


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_methods_give_two_columns_per_row(monkeypatch, method):
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", method)
    x, _ = blobs()
    points, name = report.project_2d(x)
    assert points.shape == (60, 2) and name == {"pca": "PCA", "tsne": "t-SNE"}[method]
    assert np.isfinite(points).all()


def test_pca_projection_keeps_the_direction_of_largest_variance(monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")
    x = np.zeros((4, 3))
    x[:, 1] = [-3, -1, 1, 3]
    points, _ = report.project_2d(x)
    np.testing.assert_allclose(np.abs(points[:, 0]), [3, 1, 1, 3], atol=1e-6)
    np.testing.assert_allclose(points[:, 1], 0, atol=1e-6)


def test_unknown_projection_is_rejected(monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "isomap")
    with pytest.raises(ValueError, match="umap, tsne or pca"):
        report.project_2d(blobs()[0])


def test_pictures_are_written(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")
    x, labels = blobs()
    report.plot_embeddings(x, labels, str(tmp_path / "e.png"), "title")
    neighbours = np.tile(np.arange(6), (4, 1))
    report.plot_retrieval(
        np.arange(4), neighbours, labels, lambda i: np.full((8, 8), i % 2), str(tmp_path / "r.png"), "t"
    )
    for name in ("e.png", "r.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_many_classes_are_shown_as_a_seeded_choice_with_their_names(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")
    labels = np.repeat(np.arange(30), 4)
    x = np.random.RandomState(0).randn(120, 5)
    titles, legends = [], []
    monkeypatch.setattr(plt, "close", lambda fig: (titles.append(fig.axes[0].get_title()),
                                                   legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])))
    report.plot_embeddings(x, labels, str(tmp_path / "e.png"), "unseen", seed=1, name_of=lambda c: f"c{c}")
    report.plot_embeddings(x, labels, str(tmp_path / "e.png"), "unseen", seed=1, name_of=lambda c: f"c{c}")
    assert titles[0] == f"unseen, {report.MAX_PLOTTED_CLASSES} of 30 classes (PCA)"
    assert len(legends[0]) == report.MAX_PLOTTED_CLASSES and legends[0] == legends[1]
    assert all(name.startswith("c") for name in legends[0])


def test_history_rows_of_a_resumed_epoch_replace_the_old_ones(tmp_path):
    path = str(tmp_path / "history.csv")
    for epoch in (1, 2, 3):
        report.write_history_row(path, {"epoch": epoch, "loss": float(epoch)})
    report.write_history_row(path, {"epoch": 2, "loss": 9.0})
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines == ["epoch,loss", "1,1.0", "2,9.0"]
    assert report.history_epochs(path) == 2
    assert report.history_epochs(str(tmp_path / "missing.csv")) == 0


def test_tensorboard_scalars_are_written_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    log = report.TensorBoardLog(str(tmp_path))
    log.write(1, {"loss": 0.5}, group="held_out")
    log.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert report.TensorBoardLog(None).writer is None


def test_a_run_logs_every_iteration_and_projects_the_held_out_embeddings_every_epoch(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("sklearn")
    from _cli_helpers import digits_config
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deepmetric.cli.main import main

    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")
    out = tmp_path / "run"
    assert main(["train", digits_config(tmp_path, 2), "--output", str(out), "--quiet"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    rates = events.Scalars("train/lr")
    per_epoch = len(losses) // 2
    assert per_epoch > 1 and [e.step for e in losses] == list(range(1, 2 * per_epoch + 1))
    assert [e.step for e in rates] == [e.step for e in losses] and rates[0].value == pytest.approx(0.01)
    validation = events.Scalars("epoch/validation_mean_average_precision_at_r")
    assert [e.step for e in validation] == [per_epoch, 2 * per_epoch]
    held_out = json.loads((out / "metrics.json").read_text())["held_out"]["items"]
    for epoch in (1, 2):
        folder = out / "tensorboard" / f"{epoch:05d}" / "held_out"
        labels = (folder / "metadata.tsv").read_text().split()
        rows = (folder / "tensors.tsv").read_text().strip().splitlines()
        assert len(labels) == len(rows) == held_out
        assert set(labels) == {str(d) for d in range(10)}
        assert len(rows[0].split("\t")) == 16
    # resuming to a third epoch continues the curves without doubling them
    assert main(["train", "--output", str(out), "--resume", "--epochs", "3", "--quiet"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, 3 * per_epoch + 1))
