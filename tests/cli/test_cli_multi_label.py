"""The ``deepmetric`` command on a multi-label CSV dataset: multi-hot labels in training, "shares
a class" in evaluation, and clear errors for what needs one class per item."""

import json

import numpy as np
import pytest
import torch
from _cli_helpers import write_config

from deepmetric.cli.data import shares_a_label
from deepmetric.cli.main import main

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("sklearn")

# Four classes, each a colour channel pattern; an item with several classes mixes them.
COLOURS = {0: (200, 0, 0), 1: (0, 200, 0), 2: (0, 0, 200), 3: (200, 200, 0)}
LABEL_SETS = [(0,), (1,), (2,), (3,), (0, 1), (1, 2), (2, 3), (0, 3)]

CONFIG = """
seed: 0
epochs: 2
batch_size: 16
dataset:
  name: CSVDataset
  args:
    image_size: 8
    train: {{csv_path: {train}, label_separator: "|"}}
    test: {{csv_path: {test}, label_separator: "|"}}
model: {{name: MLP, args: {{hidden_sizes: [16], embedding_size: 8}}}}
loss: {loss}
miner: {miner}
sampler: {sampler}
optimizer: {{name: Adam, args: {{lr: 0.01}}}}
scheduler: null
evaluation: {{metrics: {metrics}, k: null, zero_shot: false, validation_fraction: 0.2}}
"""


@pytest.fixture(autouse=True)
def cheap_projection(monkeypatch):
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")


def _write_split(folder, name, copies, seed):
    rng = np.random.RandomState(seed)
    (folder / name).mkdir()
    rows = ["path,label"]
    for i in range(copies):
        for j, classes in enumerate(LABEL_SETS):
            colour = np.mean([COLOURS[c] for c in classes], axis=0)
            pixels = np.clip(colour + rng.randint(-30, 31, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            path = f"{name}/{i}_{j}.png"
            Image.fromarray(pixels).save(folder / path)
            rows.append(f"{path},{'|'.join(str(c) for c in classes)}")
    (folder / f"{name}.csv").write_text("\n".join(rows) + "\n")
    return str(folder / f"{name}.csv")


def _config(tmp_path, loss="MultiSimilarityLoss", miner="MultiSimilarityMiner", sampler="null",
            metrics="[precision_at_1, mean_average_precision_at_r]"):
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        _write_split(data, "train", 6, seed=1)
        _write_split(data, "test", 2, seed=2)
    return write_config(tmp_path, CONFIG, train=data / "train.csv", test=data / "test.csv", loss=loss,
                        miner=miner, sampler=sampler, metrics=metrics)


def _precision_at_1(embeddings, labels):
    """By hand: each item's nearest other item (cosine) is a hit when they share a class."""
    x = torch.nn.functional.normalize(embeddings.double(), dim=1)
    sims = x @ x.T
    sims.fill_diagonal_(-float("inf"))
    nearest = sims.argmax(dim=1)
    hits = [(labels[i].bool() & labels[int(n)].bool()).any() for i, n in enumerate(nearest)]
    return float(np.mean([bool(h) for h in hits]))


def test_multi_label_csv_trains_and_evaluates_with_shared_classes(tmp_path):
    out = tmp_path / "run"
    assert main(["train", _config(tmp_path), "--output", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    held_out = metrics["held_out"]  # the test split shares the classes
    assert held_out["items"] == 16 and held_out["classes"] == 4
    saved = torch.load(out / "held_out" / "embeddings.pt")
    labels = saved["labels"]
    assert labels.shape == (16, 4) and set(labels.flatten().tolist()) == {0, 1}
    assert held_out["trained"]["precision_at_1"] == pytest.approx(
        _precision_at_1(saved["embeddings"], labels), abs=1e-9
    )
    assert metrics["selection"]["validation_items"] > 0
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "validation_precision_at_1" in history[0]
    assert (out / "held_out" / "retrieval.png").exists()
    # verification: a pair of distinct items is positive when it shares a class
    shared = (labels.float() @ labels.float().t()) > 0
    shared.fill_diagonal_(False)
    figures = held_out["verification"]["trained"]
    if "at_threshold" in figures:
        assert figures["at_threshold"]["positives"] == int(shared.sum())
        assert figures["at_threshold"]["negatives"] == 16 * 15 - int(shared.sum())
    else:
        assert "not_calibrated" in metrics["threshold"]
    assert 0 <= figures["roc_auc"] <= 1


def test_shares_a_label_broadcasts_over_neighbours():
    query = torch.tensor([[1, 0, 1, 0]])
    neighbours = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 0]])
    assert shares_a_label(query, neighbours).tolist() == [True, False, True]
    assert shares_a_label(query[:, None, :], neighbours[None]).tolist() == [[True, False, True]]


@pytest.mark.parametrize(
    "change, key, message",
    [
        ({"sampler": "{name: MPerClassSampler, args: {m: 4}}"}, "sampler.name",
         "MPerClassSampler draws batches by class and needs one class per item"),
        ({"loss": "ProxyAnchorLoss", "miner": "null"}, "loss.name",
         "ProxyAnchorLoss learns one weight or proxy per class and needs one class per item"),
        ({"loss": "ArcFaceLoss", "miner": "null"}, "loss.name", "ArcFaceLoss learns one weight or proxy"),
        ({"loss": "NPairsLoss", "miner": "null"}, "loss.name", "NPairsLoss builds its tuples from equal labels"),
        ({"metrics": "[precision_at_1, mean_average_precision_at_r, NMI]"}, "evaluation.metrics", "NMI cluster the items by one class each"),
    ],
)
def test_what_needs_one_class_per_item_is_refused_before_training(tmp_path, capsys, change, key, message):
    out = tmp_path / "run"
    assert main(["train", _config(tmp_path, **change), "--output", str(out), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert f"config key '{key}'" in err and message in err and "multi-label" in err
    assert not out.exists()


def test_margin_loss_takes_multi_hot_labels_without_per_class_betas(tmp_path):
    out = tmp_path / "run"
    assert main(["train", _config(tmp_path, loss="MarginLoss", miner="null"), "--output", str(out),
                 "--quiet"]) == 0
    assert "held_out" in json.loads((out / "metrics.json").read_text())


def test_a_split_that_is_not_multi_label_is_refused(tmp_path, capsys):
    path = _config(tmp_path)
    text = open(path).read().replace('test: {csv_path: ' + str(tmp_path / "data" / "test.csv") + ', label_separator: "|"}',
                                     'test: {csv_path: ' + str(tmp_path / "data" / "single.csv") + '}')
    (tmp_path / "data" / "single.csv").write_text("test/0_0.png,0\ntest/0_1.png,1\n")
    open(path, "w").write(text)
    assert main(["train", path, "--output", str(tmp_path / "run"), "--quiet"]) != 0
    assert "must both be multi-label" in capsys.readouterr().err


def test_run_data_keeps_multi_hot_labels_of_one_width(tmp_path):
    from deepmetric.cli.config import load_config
    from deepmetric.cli.data import build_data

    path = _config(tmp_path)
    # a test split whose largest class is 2: its rows are widened to the train split's 4 classes
    (tmp_path / "data" / "narrow.csv").write_text("test/0_0.png,0\ntest/0_5.png,1|2\ntest/1_2.png,2\n")
    text = open(path).read().replace(str(tmp_path / "data" / "test.csv"), str(tmp_path / "data" / "narrow.csv"))
    open(path, "w").write(text)
    data = build_data(load_config(path))
    assert data.multi_label and data.num_classes == 4
    # set aside per first class: 18, 12, 12 and 6 items of first class 0..3; int(0.2 n) of them
    # when that is at least 2: 3 + 2 + 2 + 0 = 7 for validation, 41 to train on
    assert data.train_labels.shape == (41, 4)
    assert data.validation.labels.shape == (7, 4)
    assert np.asarray(data.sections["held_out"].labels).tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]]
    x, label = data.train[0]
    assert x.shape == (3, 8, 8) and label.tolist() == list(data.train_labels[0])
    assert data.class_name(np.array([0, 1, 0, 1])) == "1|3"
