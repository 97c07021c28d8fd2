import csv
import glob
import os
import sqlite3

import pytest
import torch

from deepmetric import losses, testers, trainers
from deepmetric.training.record_keeper import RecordKeeper, RecordWriter
from deepmetric.utils import logging_presets as LP

DIM = 6


class ScriptedCalculator:
    """Returns the next scripted precision_at_1 on each call, so best epochs are known in advance."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def get_accuracy(self, query, query_labels, reference, reference_labels, ref_includes_query=False):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"precision_at_1": value}

    def get_curr_metrics(self):
        return ["precision_at_1"]

    def description(self):
        return ""


def data():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(8)
    x = torch.nn.functional.one_hot(labels, DIM).float() * 2 + torch.randn(24, DIM, generator=g)
    return torch.utils.data.TensorDataset(x, labels)


def setup(tmp_path, accuracies, patience=None, log_freq=1, test_interval=1, tensorboard=True, **trainer_kwargs):
    rk, writer, tb = LP.get_record_keeper(
        str(tmp_path / "logs"), str(tmp_path / "tb") if tensorboard else None
    )
    hooks = LP.get_hook_container(rk, primary_metric="precision_at_1", log_freq=log_freq)
    tester = testers.GlobalEmbeddingSpaceTester(
        accuracy_calculator=ScriptedCalculator(accuracies),
        end_of_testing_hook=hooks.end_of_testing_hook,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        progress_bar=False,
    )
    torch.manual_seed(0)
    models = {"trunk": torch.nn.Linear(DIM, 4)}
    optimizers = {"trunk_optimizer": torch.optim.SGD(models["trunk"].parameters(), lr=0.1)}
    epochs = []

    def record_epoch(trainer):
        epochs.append(trainer.epoch)
        return eval_hook(trainer)

    eval_hook = hooks.end_of_epoch_hook(
        tester, {"val": data()}, str(tmp_path / "models"), test_interval=test_interval, patience=patience
    )
    trainer = trainers.MetricLossOnly(
        models=models,
        optimizers=optimizers,
        batch_size=8,
        loss_funcs={"metric_loss": losses.TripletMarginLoss()},
        dataset=data(),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        progress_bar=False,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=record_epoch,
        **trainer_kwargs,
    )
    return trainer, tester, hooks, rk, epochs


GROUP = "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0_VAL_vs_self"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_training_writes_csv_sqlite_models_and_tensorboard(tmp_path):
    trainer, tester, hooks, rk, _ = setup(tmp_path, [0.5, 0.7, 0.6])
    trainer.train(num_epochs=3)
    logs = tmp_path / "logs"
    rows = read_csv(logs / "loss_histories.csv")
    assert list(rows[0])[:1] == ["~iteration~"] and "metric_loss" in rows[0] and "total_loss" in rows[0]
    assert [int(r["~iteration~"]) for r in rows] == list(range(9))  # 3 iterations per epoch, log_freq 1
    acc = read_csv(logs / f"{GROUP}.csv")
    assert [float(r["precision_at_1_level0"]) for r in acc] == [0.5, 0.7, 0.6]
    assert [int(float(r["best_epoch"])) for r in acc if r["best_epoch"]] == [1, 2, 2]
    with sqlite3.connect(logs / "logs.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"loss_histories", "loss_weights", GROUP, "trunk_optimizer_SGD"} <= tables
    assert any(t.startswith("metric_loss_TripletMarginLoss") for t in tables)
    assert any("_modules_distance_" in t for t in tables)
    models = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "models" / "*.pth")))
    assert "trunk_3.pth" in models and "trunk_best2.pth" in models
    assert "trunk_2.pth" not in models and "trunk_best1.pth" not in models
    assert "trunk_optimizer_3.pth" in models and "metric_loss_3.pth" in models
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))


def test_histories_and_best_epoch_read_back(tmp_path):
    trainer, tester, hooks, rk, _ = setup(tmp_path, [0.5, 0.9, 0.6])
    trainer.train(num_epochs=3)
    history = hooks.get_accuracy_history(tester, "val")
    assert history == {"epoch": [1, 2, 3], "precision_at_1_level0": [0.5, 0.9, 0.6]}
    assert hooks.get_best_epoch_and_accuracy(tester, "val") == (2, 0.9)
    assert hooks.get_best_epoch_and_accuracy(tester, "val", ignore_epoch=(2,)) == (3, 0.6)
    losses_history = hooks.get_loss_history()
    assert len(losses_history["total_loss"]) == 9 and "~iteration~" in losses_history
    assert set(hooks.get_loss_history(["metric_loss"])) == {"metric_loss"}
    assert len(hooks.get_accuracies_of_epoch(tester, "val", 3)) == 1
    assert hooks.get_accuracies_of_epoch(tester, "val", 7) == []


def test_patience_stops_training_after_the_best_epoch_grows_old(tmp_path):
    trainer, _, _, _, epochs = setup(tmp_path, [0.9, 0.5, 0.5, 0.5, 0.5], patience=1)
    trainer.train(num_epochs=10)
    assert epochs == [1, 2, 3]


def test_test_interval_evaluates_every_nth_epoch(tmp_path):
    trainer, tester, hooks, _, _ = setup(tmp_path, [0.5, 0.6], test_interval=2)
    trainer.train(num_epochs=4)
    assert hooks.get_accuracy_history(tester, "val")["epoch"] == [2, 4]


def test_plateau_scheduler_gets_the_primary_metric(tmp_path):
    torch.manual_seed(0)
    seen = []

    class Spy:
        def step(self, value):
            seen.append(value)

        def state_dict(self):
            return {}

    trainer, _, _, _, _ = setup(tmp_path, [0.3, 0.4], lr_schedulers={"trunk_scheduler_by_plateau": Spy()})
    trainer.train(num_epochs=2)
    assert seen == [0.3, 0.4]


def test_load_latest_saved_models_restores_and_returns_the_next_epoch(tmp_path):
    trainer, _, hooks, _, _ = setup(tmp_path, [0.5, 0.9, 0.6])
    trainer.train(num_epochs=3)
    saved = trainer.models["trunk"].weight.detach().clone()
    with torch.no_grad():
        trainer.models["trunk"].weight.zero_()
    assert hooks.load_latest_saved_models(trainer, str(tmp_path / "models"), torch.device("cpu")) == 4
    assert torch.equal(trainer.models["trunk"].weight, saved)
    assert hooks.load_latest_saved_models(trainer, str(tmp_path / "models"), torch.device("cpu"), best=True) == 3
    assert hooks.load_latest_saved_models(trainer, str(tmp_path / "empty"), torch.device("cpu")) == 1


def test_run_tester_separately_skips_epochs_already_evaluated(tmp_path):
    trainer, tester, hooks, rk, _ = setup(tmp_path, [0.5, 0.6, 0.7])
    trainer.train(num_epochs=1)
    trunk = trainer.models["trunk"]
    assert hooks.run_tester_separately(tester, {"val": data()}, 1, trunk, None) is False
    assert hooks.run_tester_separately(tester, {"val": data()}, 5, trunk, None) is True


def test_primary_metric_must_be_computed_by_the_calculator(tmp_path):
    rk, _, _ = LP.get_record_keeper(str(tmp_path))
    hooks = LP.get_hook_container(rk)  # default primary metric: mean_average_precision_at_r
    tester = testers.GlobalEmbeddingSpaceTester(accuracy_calculator=ScriptedCalculator([1.0]))
    with pytest.raises(ValueError, match="primary_metric"):
        hooks.end_of_epoch_hook(tester, {}, str(tmp_path / "m"))


def test_no_record_keeper_gives_an_empty_container():
    container = LP.get_hook_container(None)
    assert isinstance(container, LP.EmptyContainer)
    assert container.end_of_iteration_hook is None and container.end_of_testing_hook is None
    assert container.end_of_epoch_hook(1, 2, 3) is None


def test_record_group_names_and_prefix(tmp_path):
    rk, _, _ = LP.get_record_keeper(str(tmp_path))
    hooks = LP.HookContainer(rk, record_group_name_prefix="exp")
    tester = testers.GlobalEmbeddingSpaceTester(accuracy_calculator=ScriptedCalculator([1.0]))
    tester.reference_split_names = {"val": ["val", "train"], "test": ["test"]}
    assert hooks.record_group_name(tester, "val") == (
        "exp_accuracies_normalized_GlobalEmbeddingSpaceTester_level_0_VAL_vs_TRAIN_and_VAL"
    )
    assert hooks.record_group_name(tester, "test").endswith("_TEST_vs_self")


def test_long_group_names_are_hashed_and_mapped_back(tmp_path):
    writer = RecordWriter(str(tmp_path))
    rk = RecordKeeper(record_writer=writer)
    long_name = "g" * 200
    rk.update_records({"a": 1.0}, 0, parent_name=long_name)
    rk.save_records()
    (hashed,) = rk.hash_map
    assert rk.hash_map[hashed] == long_name and rk.table_exists(hashed)
    assert os.path.exists(tmp_path / "hash_map.json")
    assert RecordKeeper(record_writer=RecordWriter(str(tmp_path))).hash_map == rk.hash_map


def test_record_writer_adds_columns_and_skips_non_numbers(tmp_path):
    writer = RecordWriter(str(tmp_path))
    rk = RecordKeeper(record_writer=writer)
    rk.update_records({"a": torch.tensor(1.5), "b": "text", "c": [1, 2]}, 0, parent_name="grp")
    rk.save_records()
    rk.update_records({"a": 2, "d": True}, 1, parent_name="grp")
    rk.save_records()
    rows = read_csv(tmp_path / "grp.csv")
    assert list(rows[0]) == ["~iteration~", "a", "d"]
    assert [(r["a"], r["d"]) for r in rows] == [("1.5", ""), ("2", "1")]
    assert rk.query("SELECT a FROM grp", return_dict=True) == {"a": [1.5, 2]}


def test_save_lists_stores_lists_as_json(tmp_path):
    rk = RecordKeeper(record_writer=RecordWriter(str(tmp_path), save_lists=True))
    rk.update_records({"c": [1, 2]}, 0, parent_name="grp")
    rk.save_records()
    assert read_csv(tmp_path / "grp.csv")[0]["c"] == "[1, 2]"


def test_global_db_gets_rows_tagged_with_the_experiment(tmp_path):
    db = str(tmp_path / "global.db")
    for name in ("one", "two"):
        rk = RecordKeeper(record_writer=RecordWriter(str(tmp_path / name), global_db_path=db, experiment_name=name))
        rk.update_records({"a": 1.0}, 0, parent_name="grp")
        rk.save_records()
    rk = RecordKeeper(record_writer=RecordWriter(str(tmp_path / "one"), global_db_path=db, experiment_name="one"))
    with sqlite3.connect(db) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT experiment_name FROM grp")) == ["two"]


def test_end_to_end_with_the_real_accuracy_calculator(tmp_path):
    rk, _, _ = LP.get_record_keeper(str(tmp_path / "logs"), str(tmp_path / "tb"))
    hooks = LP.get_hook_container(rk, log_freq=2)
    tester = testers.GlobalEmbeddingSpaceTester(
        end_of_testing_hook=hooks.end_of_testing_hook, dataloader_num_workers=0,
        data_device=torch.device("cpu"), progress_bar=False,
    )
    torch.manual_seed(0)
    models = {"trunk": torch.nn.Linear(DIM, 4)}
    trainer = trainers.MetricLossOnly(
        models=models,
        optimizers={"trunk_optimizer": torch.optim.SGD(models["trunk"].parameters(), lr=0.1)},
        batch_size=8,
        loss_funcs={"metric_loss": losses.TripletMarginLoss()},
        dataset=data(),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        progress_bar=False,
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=hooks.end_of_epoch_hook(tester, {"val": data(), "train": data()}, str(tmp_path / "m")),
    )
    trainer.train(num_epochs=2)
    history = hooks.get_accuracy_history(tester, "val", return_all_metrics=True)
    assert history["epoch"] == [1, 2]
    assert all(0 <= v <= 1 for v in history["mean_average_precision_at_r_level0"])
    assert os.path.exists(tmp_path / "logs" / "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0_TRAIN_vs_self.csv")
    assert [r["~iteration~"] for r in read_csv(tmp_path / "logs" / "loss_histories.csv")] == ["0", "2", "3", "5"]
