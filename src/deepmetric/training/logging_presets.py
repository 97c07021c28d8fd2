"""Ready-made hooks for trainers and testers: log losses and hyper-parameters, evaluate, keep
the latest and best models, stop early when validation accuracy stops improving.

Typical wiring::

    record_keeper, _, _ = logging_presets.get_record_keeper("logs", "tensorboard")
    hooks = logging_presets.get_hook_container(record_keeper)
    tester = testers.GlobalEmbeddingSpaceTester(end_of_testing_hook=hooks.end_of_testing_hook)
    end_of_epoch_hook = hooks.end_of_epoch_hook(tester, {"val": val_set}, "models", patience=3)
    trainer = trainers.MetricLossOnly(..., end_of_iteration_hook=hooks.end_of_iteration_hook,
                                      end_of_epoch_hook=end_of_epoch_hook)

Records go through :mod:`deepmetric.training.record_keeper` (CSV per group, SQLite, TensorBoard when
installed); the ``record-keeper`` package is not needed.
"""

import os
import sqlite3

import torch

from ..utils import common_functions as c_f
from . import saved_models
from .record_keeper import RecordKeeper, RecordWriter


class HookContainer:
    def __init__(
        self,
        record_keeper,
        record_group_name_prefix=None,
        primary_metric="mean_average_precision_at_r",
        validation_split_name="val",
        save_models=True,
        log_freq=50,
    ):
        self.record_keeper = record_keeper
        self.record_group_name_prefix = record_group_name_prefix
        self.saveable_trainer_objects = [
            "models", "optimizers", "lr_schedulers", "loss_funcs", "mining_funcs"
        ]
        self.primary_metric = primary_metric
        self.validation_split_name = validation_split_name
        self.do_save_models = save_models
        self.log_freq = log_freq

    # ------------------------------------------------------------------------------------------
    # hooks

    def end_of_iteration_hook(self, trainer):
        if trainer.iteration % self.log_freq != 0:
            return
        x = trainer.get_global_iteration()
        rk = self.record_keeper
        rk.update_records(trainer.loss_tracker.losses, x, parent_name="loss_histories")
        rk.update_records(trainer.loss_tracker.loss_weights, x, parent_name="loss_weights")
        rk.update_records(trainer.loss_funcs, x, recursive_types=[torch.nn.Module, dict])
        rk.update_records(trainer.mining_funcs, x)
        rk.update_records(trainer.models, x)
        rk.update_records(trainer.optimizers, x, custom_attr_func=self.optimizer_custom_attr_func)

    def end_of_epoch_hook(
        self,
        tester,
        dataset_dict,
        model_folder,
        test_interval=1,
        patience=None,
        splits_to_eval=None,
        test_collate_fn=None,
    ):
        """Returns the trainer hook: every ``test_interval`` epochs evaluate, save models, and stop
        (return False) once the best epoch is more than ``patience`` epochs old."""
        available = tester.accuracy_calculator.get_curr_metrics()
        if self.primary_metric not in available:
            raise ValueError(f"HookContainer `primary_metric` must be one of: {available}")
        os.makedirs(model_folder, exist_ok=True)

        def actual_hook(trainer):
            if trainer.epoch % test_interval != 0:
                return True
            best_epoch = self.save_models_and_eval(
                trainer, dataset_dict, model_folder, test_interval, tester, splits_to_eval, test_collate_fn
            )
            return self.patience_remaining(trainer.epoch, best_epoch, patience)

        return actual_hook

    def end_of_testing_hook(self, tester):
        for split_name, accuracies in tester.all_accuracies.items():
            epoch = accuracies["epoch"]
            group = self.record_group_name(tester, split_name)
            self.record_keeper.update_records(accuracies, epoch, parent_name=group)
            _, _, best_epoch, best_accuracy = self.is_new_best_accuracy(tester, split_name, epoch)
            self.record_keeper.update_records(
                {"best_epoch": best_epoch, "best_accuracy": best_accuracy}, epoch, parent_name=group
            )

    # ------------------------------------------------------------------------------------------
    # saving and loading models

    def load_latest_saved_models(self, trainer, model_folder, device=None, best=False):
        """Load the newest (or best) saved objects into the trainer; returns the epoch to resume at."""
        if device is None:
            device = c_f.use_cuda_if_available()
        resume_epoch, suffix = saved_models.latest_version(model_folder, "trunk_*.pth", best=best)
        if resume_epoch > 0:
            for obj_dict in [getattr(trainer, x, {}) for x in self.saveable_trainer_objects]:
                saved_models.load_dict_of_models(
                    obj_dict, suffix, model_folder, device, log_if_successful=True
                )
        return resume_epoch + 1

    def save_models(self, trainer, model_folder, curr_suffix, prev_suffix=None):
        if not self.do_save_models:
            return
        for obj_dict in [getattr(trainer, x, {}) for x in self.saveable_trainer_objects]:
            saved_models.save_dict_of_models(obj_dict, curr_suffix, model_folder)
            if prev_suffix is not None:
                saved_models.delete_dict_of_models(obj_dict, prev_suffix, model_folder)

    def save_models_and_eval(
        self,
        trainer,
        dataset_dict,
        model_folder,
        test_interval,
        tester,
        splits_to_eval=None,
        collate_fn=None,
    ):
        epoch = trainer.epoch
        trunk, embedder = trainer.models["trunk"], trainer.models["embedder"]
        tester.test(dataset_dict, epoch, trunk, embedder, splits_to_eval, collate_fn)
        prev_best_epoch, _ = self.get_best_epoch_and_accuracy(tester, self.validation_split_name)
        is_new_best, curr_accuracy, best_epoch, _ = self.is_new_best_accuracy(
            tester, self.validation_split_name, epoch
        )
        self.record_keeper.save_records()
        trainer.step_lr_plateau_schedulers(curr_accuracy)
        self.save_models(trainer, model_folder, epoch, epoch - test_interval)
        if is_new_best:
            c_f.LOGGER.info(f"New best accuracy! {curr_accuracy}")
            prev_suffix = f"best{prev_best_epoch}" if prev_best_epoch is not None else None
            self.save_models(trainer, model_folder, f"best{best_epoch}", prev_suffix)
        return best_epoch

    def is_new_best_accuracy(self, tester, split_name, epoch):
        curr_accuracy = self.get_curr_primary_metric(tester, split_name)
        best_epoch, best_accuracy = self.get_best_epoch_and_accuracy(tester, split_name)
        is_new_best = False
        if best_epoch is None or curr_accuracy > best_accuracy:
            best_epoch, best_accuracy = epoch, curr_accuracy
            is_new_best = True
        return is_new_best, curr_accuracy, best_epoch, best_accuracy

    # ------------------------------------------------------------------------------------------
    # histories and best epochs, read back from the database

    def get_loss_history(self, loss_names=()):
        table = "loss_histories"
        if not self.record_keeper.table_exists(table):
            return {}
        columns = "*" if len(loss_names) == 0 else ", ".join(loss_names)
        output = self.record_keeper.query(f"SELECT {columns} FROM {table}", return_dict=True)
        output.pop("id", None)
        return output

    def get_accuracy_history(self, tester, split_name, return_all_metrics=False, metrics=()):
        table = self.record_group_name(tester, split_name)
        if not self.record_keeper.table_exists(table):
            return {}

        def get_accuracies(keys):
            columns = "*" if return_all_metrics else f"epoch, {keys}"
            return self.record_keeper.query(f"SELECT {columns} FROM {table}", return_dict=True)

        keys = metrics if len(metrics) > 0 else [self.primary_metric]
        output = self.try_keys(keys, tester, get_accuracies)
        output.pop("id", None)
        return output

    def get_curr_primary_metric(self, tester, split_name):
        return self.try_primary_metric(tester, lambda key: tester.all_accuracies[split_name][key])

    def try_keys(self, input_keys, tester, input_func):
        """``input_func`` on the averaged metric names first, then on the per-level names."""
        for average in (True, False):
            keys = ", ".join(
                tester.accuracies_keyname(
                    k, average=average, label_hierarchy_level=tester.label_hierarchy_level
                )
                for k in input_keys
            )
            try:
                return input_func(keys)
            except (KeyError, sqlite3.OperationalError):
                pass
        raise KeyError(f"none of {list(input_keys)} found (averaged or at label level)")

    def try_primary_metric(self, tester, input_func):
        return self.try_keys([self.primary_metric], tester, input_func)

    def get_accuracies_of_epoch(self, tester, split_name, epoch, select_all=True):
        table = self.record_group_name(tester, split_name)
        if not self.record_keeper.table_exists(table):
            return []

        def get_accuracies(key):
            columns = "*" if select_all else f"epoch, {key}"
            return self.record_keeper.query(f"SELECT {columns} FROM {table} WHERE epoch=?", (epoch,))

        return self.try_primary_metric(tester, get_accuracies)

    def get_accuracies_of_best_epoch(self, tester, split_name, select_all=True, ignore_epoch=(-1,)):
        table = self.record_group_name(tester, split_name)
        if not self.record_keeper.table_exists(table):
            return [], None

        def get_accuracies(key):
            columns = "*" if select_all else f"epoch, {key}"
            marks = ", ".join("?" * len(ignore_epoch))
            query = (
                f"SELECT {columns} FROM {table} WHERE {key}="
                f"(SELECT max({key}) FROM {table} WHERE epoch NOT IN ({marks})) AND epoch NOT IN ({marks})"
            )
            return self.record_keeper.query(query, tuple(ignore_epoch) * 2), key

        return self.try_primary_metric(tester, get_accuracies)

    def get_best_epoch_and_accuracy(self, tester, split_name, ignore_epoch=(-1,)):
        rows, key = self.get_accuracies_of_best_epoch(
            tester, split_name, select_all=False, ignore_epoch=ignore_epoch
        )
        if len(rows) > 0:
            return rows[0]["epoch"], rows[0][key]
        return None, 0

    def patience_remaining(self, epoch, best_epoch, patience):
        if patience is not None and best_epoch is not None and epoch - best_epoch > patience:
            c_f.LOGGER.info("Validation accuracy has plateaued. Exiting.")
            return False
        return True

    def run_tester_separately(
        self,
        tester,
        dataset_dict,
        epoch,
        trunk,
        embedder,
        splits_to_eval=None,
        collate_fn=None,
        skip_eval_if_already_done=True,
    ):
        if skip_eval_if_already_done:
            splits_to_eval = self.get_splits_to_eval(tester, dataset_dict, epoch, splits_to_eval)
            if len(splits_to_eval) == 0:
                c_f.LOGGER.info("Already evaluated")
                return False
        if splits_to_eval is not None:
            # the tester wants (query, [references]) pairs; a bare split name means "against itself"
            splits_to_eval = [(s, [s]) if isinstance(s, str) else s for s in splits_to_eval]
        tester.test(dataset_dict, epoch, trunk, embedder, splits_to_eval, collate_fn)
        return True

    def get_splits_to_eval(self, tester, dataset_dict, epoch, input_splits_to_eval):
        """The entries (split names or ``(query, [references])`` pairs) not yet evaluated at ``epoch``."""
        if input_splits_to_eval is None:
            input_splits_to_eval = list(dataset_dict.keys())
        return [
            s
            for s in input_splits_to_eval
            if len(self.get_accuracies_of_epoch(tester, s if isinstance(s, str) else s[0], epoch)) == 0
        ]

    def base_record_group_name(self, tester):
        prefix = f"{self.record_group_name_prefix}_" if self.record_group_name_prefix else ""
        return prefix + tester.description_suffixes("accuracies")

    def record_group_name(self, tester, split_name):
        query_label = split_name.upper()
        refs = tester.reference_split_names.get(split_name, [split_name])
        refs_label = "_and_".join(name.upper() for name in sorted(refs))
        if refs_label == query_label:
            refs_label = "self"
        name = f"{self.base_record_group_name(tester)}_{query_label}_vs_{refs_label}"
        for hashed, original in self.record_keeper.hash_map.items():
            if original == name:
                return hashed
        return name

    def optimizer_custom_attr_func(self, optimizer):
        return {"lr": optimizer.param_groups[0]["lr"]}


class EmptyContainer:
    """Stand-in when there is no record keeper: trainers and testers fall back to their defaults."""

    end_of_iteration_hook = None
    end_of_testing_hook = None

    def end_of_epoch_hook(self, *args):
        return None


def get_record_keeper(
    csv_folder,
    tensorboard_folder=None,
    global_db_path=None,
    experiment_name=None,
    is_new_experiment=True,
    save_lists=False,
):
    """``(record_keeper, record_writer, tensorboard_writer)``; TensorBoard only when a folder is given
    and the ``tensorboard`` package is installed (a warning otherwise)."""
    record_writer = RecordWriter(
        folder=csv_folder,
        global_db_path=global_db_path,
        experiment_name=experiment_name,
        is_new_experiment=is_new_experiment,
        save_lists=save_lists,
    )
    tensorboard_writer = None
    if tensorboard_folder is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tensorboard_writer = SummaryWriter(log_dir=tensorboard_folder)
        except ModuleNotFoundError as e:
            c_f.LOGGER.warning(f"{e}: no TensorBoard logging. To fix this, pip install tensorboard")
    record_keeper = RecordKeeper(
        tensorboard_writer=tensorboard_writer,
        record_writer=record_writer,
        attributes_to_search_for=c_f.list_of_recordable_attributes_list_names(),
    )
    return record_keeper, record_writer, tensorboard_writer


def get_hook_container(record_keeper, **kwargs):
    if record_keeper:
        return HookContainer(record_keeper, **kwargs)
    c_f.LOGGER.warning("No record_keeper, so no preset hooks are being returned.")
    return EmptyContainer()
