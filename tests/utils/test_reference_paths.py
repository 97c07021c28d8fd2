"""The faces at pytorch-metric-learning's module paths (and at deepmetric's earlier ones) hand on
the very objects of the modules' new homes, every name the reference's module exposes included,
and ``c_f`` still reaches the training helpers that moved out of ``common_functions``."""

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import requires_reference

SRC = Path(__file__).resolve().parents[2] / "src"

# face -> the modules its names live in now
HOMES = {
    "accuracy_calculator": [
        "deepmetric.evaluation.accuracy_calculator",
        "deepmetric.evaluation.relevance",
        "deepmetric.evaluation.retrieval_metrics",
        "deepmetric.evaluation.inference",
        "deepmetric.evaluation.knn",
        "deepmetric.evaluation.kmeans",
    ],
    "inference": ["deepmetric.evaluation.inference", "deepmetric.evaluation.knn", "deepmetric.distances"],
    "logging_presets": ["deepmetric.training.logging_presets", "deepmetric.training.record_keeper"],
    "distributed": ["deepmetric.distributed", "deepmetric.ops.gather", "deepmetric.losses", "deepmetric.miners"],
    "loss_tracker": ["deepmetric.training.loss_tracker"],
    "key_checker": ["deepmetric.training.key_checker"],
    "module_with_records_and_reducer": [
        "deepmetric.reducers.module_with_records_and_reducer",
        "deepmetric.distances.module_with_records_and_distance",
        "deepmetric.utils.module_with_records",
        "deepmetric.reducers",
        "deepmetric.distances",
    ],
    "knn": ["deepmetric.evaluation.knn"],
    "kmeans": ["deepmetric.evaluation.kmeans"],
    "checkpoint": ["deepmetric.training.checkpoint"],
    "record_keeper": ["deepmetric.training.record_keeper"],
    "sharded_knn": ["deepmetric.evaluation.sharded_knn"],
    "sharded_evaluation": ["deepmetric.evaluation.sharded_evaluation", "deepmetric.ops.gather"],
    "positive_ranks": ["deepmetric.evaluation.positive_ranks"],
}

# What these paths offered before the split (deepmetric's own names), beyond the reference's.
EARLIER = {
    "accuracy_calculator": ["ExactKNN", "TorchKMeans", "default_kmeans_func", "recall_at_k", "mean_average_precision_at_k"],
    "inference": ["ExactKNN", "exact_knn"],
    "logging_presets": ["RecordKeeper", "RecordWriter"],
    "distributed": ["all_gather_rows"],
    "knn": ["ExactKNN", "exact_knn", "search_exact", "default_distance", "merge_candidates", "drop_own_entry",
            "DEFAULT_CPU_BUDGET_BYTES", "DEFAULT_CUDA_BUDGET_BYTES"],
    "kmeans": ["TorchKMeans"],
    "checkpoint": ["CheckpointError", "checkpoint_path", "list_checkpoints", "save_checkpoint", "load_checkpoint",
                   "get_rng_states", "set_rng_states"],
    "record_keeper": ["RecordKeeper", "RecordWriter", "ITERATION", "MAX_GROUP_NAME"],
    "sharded_knn": ["sharded_knn"],
    "sharded_evaluation": ["sharded_accuracy", "active", "calculator_distance", "gather_rows"],
    "positive_ranks": ["positive_ranks", "supports_distance"],
}


def face(name):
    return importlib.import_module(f"deepmetric.utils.{name}")


@pytest.mark.parametrize("name", sorted(HOMES))
def test_a_face_hands_on_the_objects_of_their_homes(name):
    module = face(name)
    homes = [importlib.import_module(h) for h in HOMES[name]]
    for exported in module.__all__:
        obj = getattr(module, exported)
        if isinstance(obj, types.ModuleType):
            assert obj.__name__.startswith("deepmetric.utils."), exported
            continue
        assert any(getattr(home, exported, None) is obj for home in homes), f"{name}.{exported}"


@pytest.mark.parametrize("name", sorted(EARLIER))
def test_a_face_keeps_what_its_path_offered_before(name):
    module = face(name)
    missing = [n for n in EARLIER[name] if not hasattr(module, n)]
    assert not missing


def reference_names(module):
    """Names the reference's module exposes: its own definitions and what it imports from its
    own package (third-party imports such as sklearn's functions left out)."""
    names = []
    for n, obj in vars(module).items():
        if n.startswith("_"):
            continue
        if isinstance(obj, types.ModuleType):
            if obj.__name__.startswith("pytorch_metric_learning"):
                names.append(n)
            continue
        origin = getattr(obj, "__module__", None) or ""
        if origin.startswith("pytorch_metric_learning") or not callable(obj) or n == "EQUALITY":
            names.append(n)
    return names


@requires_reference
@pytest.mark.parametrize(
    "name",
    [
        "accuracy_calculator",
        "inference",
        "logging_presets",
        "distributed",
        "loss_tracker",
        "key_checker",
        "module_with_records_and_reducer",
        "common_functions",
        "loss_and_miner_utils",
        "module_with_records",
    ],
)
def test_every_name_of_the_references_module_is_at_the_same_path(name):
    theirs = importlib.import_module(f"pytorch_metric_learning.utils.{name}")
    ours = face(name)
    expected = reference_names(theirs)
    assert expected, name
    missing = [n for n in expected if not hasattr(ours, n)]
    assert not missing, f"deepmetric.utils.{name} lacks {missing}"


def test_the_moved_training_helpers_are_reached_through_c_f(tmp_path):
    from deepmetric.training import dataloaders, record_keeper, saved_models
    from deepmetric.utils import common_functions as c_f

    assert c_f.save_dict_of_models is saved_models.save_dict_of_models
    assert c_f.latest_version is saved_models.latest_version
    assert c_f.get_train_dataloader is dataloaders.get_train_dataloader
    assert c_f.EmbeddingDataset is dataloaders.EmbeddingDataset
    assert c_f.sqlite_obj_to_dict is record_keeper.sqlite_obj_to_dict
    assert {"save_model", "load_model", "regex_wrapper"} <= set(dir(c_f))
    with pytest.raises(AttributeError, match="no_such_helper"):
        c_f.no_such_helper  # noqa: B018


def test_c_f_globals_are_read_at_call_time_by_the_moved_helpers(monkeypatch, tmp_path, caplog):
    import logging

    import torch

    from deepmetric.utils import common_functions as c_f

    # A user who renames the library's logger sees the moved helpers log there.
    monkeypatch.setattr(c_f, "LOGGER", logging.getLogger("renamed_for_this_test"))
    with caplog.at_level(logging.INFO, logger="renamed_for_this_test"):
        c_f.save_dict_of_models({"trunk": torch.nn.Linear(2, 2)}, 3, str(tmp_path), log_if_successful=True)
    assert (tmp_path / "trunk_3.pth").exists()
    assert any("SAVE" in r.message and r.name == "renamed_for_this_test" for r in caplog.records)


def test_a_face_imported_alone_loads_its_home():
    code = (
        "import sys\n"
        "from deepmetric.utils.accuracy_calculator import AccuracyCalculator\n"
        "from deepmetric.utils.distributed import DistributedLossWrapper\n"
        "print(AccuracyCalculator.__module__, DistributedLossWrapper.__module__)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["deepmetric.evaluation.accuracy_calculator", "deepmetric.distributed"]
