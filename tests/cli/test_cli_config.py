"""Config loading and validation of the ``deepmetric`` command: every problem is one line that
names the config key at fault, exit status 2, no traceback."""

import numpy as np
import pytest
import torch
from _cli_helpers import DIGITS_CONFIG, write_config

from deepmetric.cli import components
from deepmetric.cli.config import DEFAULT_CONFIG, ConfigError, load_config, merge_config
from deepmetric.cli.main import main


def config_file(tmp_path, text):
    return write_config(tmp_path, text)


def test_defaults_load_without_a_file():
    config = load_config()
    assert config["dataset"]["name"] == "Glyphs"
    assert config == DEFAULT_CONFIG


def test_a_component_given_by_the_user_replaces_the_default():
    config = merge_config(DEFAULT_CONFIG, {"loss": {"name": "ContrastiveLoss"}})
    assert config["loss"] == {"name": "ContrastiveLoss"}
    merged = merge_config(DEFAULT_CONFIG, {"evaluation": {"k": 5}})
    assert merged["evaluation"]["k"] == 5 and merged["evaluation"]["zero_shot"] is True


@pytest.mark.parametrize(
    "text,key,fragment",
    [
        ("epochs: 0\n", "epochs", "positive integer"),
        ("epochs: ten\n", "epochs", "positive integer"),
        ("batch_size: -4\n", "batch_size", "positive integer"),
        ("colour: red\n", "colour", "unknown key; allowed: seed, epochs"),
        ("epoch: 3\n", "epoch", "did you mean 'epochs'?"),
        ("device: tpu\n", "device", "'cpu', 'cuda'"),
        ("device: 'cuda:x'\n", "device", "'cpu', 'cuda'"),
        ("evaluation: {k: 0}\n", "evaluation.k", "positive integer"),
        ("evaluation: {metrics: []}\n", "evaluation.metrics", "non-empty list"),
        ("evaluation: {recall: 3}\n", "evaluation.recall", "unknown key"),
        ("evaluation: {patienc: 3}\n", "evaluation.patienc", "did you mean 'patience'?"),
        ("evaluation: {patience: 0}\n", "evaluation.patience", "positive integer or null"),
        ("evaluation: {validation_fraction: 1.5}\n", "evaluation.validation_fraction", "[0, 1)"),
        ("evaluation: {validation_fraction: 0.5, held_out_fraction: 0.5}\n", "evaluation.held_out_fraction",
         "sum below 1"),
        ("evaluation: {select: recall_at_1}\n", "evaluation.select", "one of evaluation.metrics"),
        ("evaluation: {metrics: [precision_at_1, eer], select: eer}\n", "evaluation.select", "better when lower"),
        ("evaluation: {metrics: [fnmr_at_fmr_1e-3], select: fnmr_at_fmr_1e-3}\n", "evaluation.select",
         "highest score"),
        ("evaluation: {threshold: best_f2}\n", "evaluation.threshold", "'best_f1' or one of"),
        ("evaluation: {threshold: {fmr: 1}}\n", "evaluation.threshold", "rate in (0, 1)"),
        ("evaluation: {threshold: {precision: 0}}\n", "evaluation.threshold", "rate in (0, 1)"),
        ("evaluation: {threshold: {fmr: 0.1, recall: 0.9}}\n", "evaluation.threshold", "got {"),
        ("evaluation: {rerank: {args: {k1: 3}}}\n", "evaluation.rerank", "class name or a mapping"),
        ("loss: {args: {margin: 1}}\n", "loss", "class name or a mapping"),
        ("loss: {name: TripletMarginLoss, args: [1, 2]}\n", "loss.args", "must be a mapping"),
        ("loss: {name: TripletMarginLoss, weight: 2}\n", "loss.weight", "unknown key"),
        ("model: {name: MLP, weigths: a.pt}\n", "model.weigths", "did you mean 'weights'?"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(config_file(tmp_path, text))
    assert err.value.key == key
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file(tmp_path, "loss: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(config_file(tmp_path, "- 1\n- 2\n"))


def test_unknown_class_names_list_the_allowed_ones_and_the_closest():
    config = merge_config(DEFAULT_CONFIG, {"loss": "TripletMarginLos"})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=10, embedding_size=8)
    assert err.value.key == "loss.name"
    assert "unknown class 'TripletMarginLos' (did you mean 'TripletMarginLoss'?); allowed:" in str(err.value)
    config = merge_config(DEFAULT_CONFIG, {"optimizer": {"name": "Adamm"}})
    with pytest.raises(ConfigError, match="did you mean 'Adam'"):
        components.build_optimizer(config, [torch.zeros(1, requires_grad=True)])


def test_a_misspelt_argument_names_its_key_and_the_closest_argument_not_an_internal_class():
    config = merge_config(DEFAULT_CONFIG, {"loss": {"name": "TripletMarginLoss", "args": {"margn": 1}}})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=10, embedding_size=8)
    message = str(err.value)
    assert err.value.key == "loss.args.margn"
    assert "TripletMarginLoss has no argument 'margn' (did you mean 'margin'?)" in message
    assert "arguments: margin, swap, smooth_loss, triplets_per_anchor" in message
    # arguments a loss passes on to its base classes are accepted and listed
    assert "distance" in message and "reducer" in message
    assert "ModuleWithRecords" not in message and "__init__" not in message


def test_a_number_that_is_not_one_names_the_argument():
    config = merge_config(DEFAULT_CONFIG, {"optimizer": {"name": "Adam", "args": {"lr": "abc"}}})
    with pytest.raises(ConfigError) as err:
        components.build_optimizer(config, [torch.zeros(1, requires_grad=True)])
    assert err.value.key == "optimizer.args.lr"
    assert str(err.value) == "config key 'optimizer.args.lr': must be a number, got 'abc'"


def test_a_number_written_as_a_string_is_read_as_a_number():
    # YAML reads 1e-3 (no dot) as the string '1e-3'
    config = load_config(overrides={"optimizer": {"name": "Adam", "args": {"lr": "1e-3"}}})
    optimizer = components.build_optimizer(config, [torch.zeros(1, requires_grad=True)])
    assert optimizer.param_groups[0]["lr"] == 0.001


def test_a_missing_required_argument_names_its_key():
    config = merge_config(DEFAULT_CONFIG, {"loss": "RankedListLoss"})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=10, embedding_size=8)
    assert err.value.key == "loss.args.margin" and "'Tn'" in str(err.value)


def test_a_failing_value_names_the_argument_it_is_about():
    config = merge_config(DEFAULT_CONFIG, {"miner": {"name": "MultiSimilarityMiner", "args": {"epsilon": -1}}})
    components.build_miner(config)  # accepted, as the reference does
    config = merge_config(DEFAULT_CONFIG, {"loss": {"name": "ProxyAnchorLoss", "args": {"num_classes": 0}}})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=10, embedding_size=8)
    assert err.value.key == "loss.args.num_classes"


def test_loss_parts_are_built_by_name():
    config = merge_config(DEFAULT_CONFIG, {"loss": {
        "name": "TripletMarginLoss", "args": {"margin": 0.3},
        "distance": "CosineSimilarity", "reducer": {"name": "ThresholdReducer", "args": {"low": 0.1}},
    }})
    loss = components.build_loss(config, num_classes=10, embedding_size=8)
    assert type(loss.distance).__name__ == "CosineSimilarity" and loss.margin == 0.3
    assert loss.reducer.low == 0.1
    bad = merge_config(DEFAULT_CONFIG, {"loss": {"name": "TripletMarginLoss", "distance": "Euclid"}})
    with pytest.raises(ConfigError, match="loss.distance.name"):
        components.build_loss(bad, num_classes=10, embedding_size=8)


# Losses with hyper-parameters that have no default.
REQUIRED_ARGS = {"RankedListLoss": {"margin": 0.4, "Tn": 1}}


@pytest.mark.parametrize("name", components.loss_names())
def test_every_loss_offered_builds_and_runs_on_a_labelled_batch(name):
    config = merge_config(DEFAULT_CONFIG, {"loss": {"name": name, "args": REQUIRED_ARGS.get(name, {})}})
    loss = components.build_loss(config, num_classes=4, embedding_size=8)
    embeddings = torch.randn(16, 8, requires_grad=True)
    value = loss(embeddings, torch.arange(16) % 4)
    value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", sorted(components.PYTHON_ONLY_LOSSES))
def test_losses_for_python_only_say_why(name):
    config = merge_config(DEFAULT_CONFIG, {"loss": name})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=4, embedding_size=8)
    assert err.value.key == "loss.name"
    assert f"{name} cannot be used in a config: it " in str(err.value)
    assert "unknown class" not in str(err.value)


def test_the_samplers_the_docs_name_build_and_fill_whole_global_batches():
    from deepmetric.cli.distributed import GlobalBatches

    labels = np.repeat(np.arange(12), 6)
    super_labels = labels // 4
    for entry in ({"name": "MPerClassSampler", "args": {"m": 4}},
                  {"name": "HierarchicalSampler", "args": {"samples_per_class": 2}}):
        config = merge_config(DEFAULT_CONFIG, {"sampler": entry})
        sampler = GlobalBatches(components.build_sampler(config, labels, super_labels, 16), 16, seed=0)
        batches = sampler.global_batches()
        assert batches.shape[1] == 16 and len(batches) > 0
        assert len(list(sampler)) == len(sampler)
    config = merge_config(DEFAULT_CONFIG, {"sampler": {"name": "HierarchicalSampler",
                                                       "args": {"samples_per_class": 2}}})
    with pytest.raises(ConfigError, match="needs a dataset with super classes"):
        components.build_sampler(config, labels, None, 16)
    config = merge_config(DEFAULT_CONFIG, {"sampler": "FixedSetOfTriplets"})
    with pytest.raises(ConfigError, match="cannot be used in a config"):
        components.build_sampler(config, labels, None, 16)


def test_the_cosine_schedule_follows_epochs():
    config = load_config(overrides={"epochs": 5})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = components.build_scheduler(config, optimizer)
    assert scheduler.T_max == 5
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    given = merge_config(config, {"scheduler": {"name": "CosineAnnealingLR", "args": {"T_max": 7}}})
    assert components.build_scheduler(given, optimizer).T_max == 7


def test_command_line_prints_one_line_and_exits_2(tmp_path, capsys):
    code = main(["train", config_file(tmp_path, "epochs: -1\n"), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "deepmetric: error: config key 'epochs': must be a positive integer, got -1"
    assert main(["evaluate", "--output", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--resume", "--output", str(tmp_path / "fresh")]) == 2


def one_line_exit_2(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("deepmetric: error: "), err
    assert "Traceback" not in err
    return err


def test_a_cuda_device_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = config_file(tmp_path, DIGITS_CONFIG.format(epochs=1) + "device: cuda\n")
    err = one_line_exit_2(capsys, ["train", path, "--output", str(tmp_path / "run")])
    assert "config key 'device': 'cuda' asked for, but torch sees no CUDA GPU" in err
    assert not (tmp_path / "run").exists()


def test_a_negative_embedding_size_is_one_line(tmp_path, capsys):
    text = DIGITS_CONFIG.format(epochs=1).replace("embedding_size: 16", "embedding_size: -4")
    err = one_line_exit_2(capsys, ["train", config_file(tmp_path, text), "--output", str(tmp_path / "run")])
    assert "config key 'model.args.embedding_size': MLP: embedding_size must be a positive integer, got -4" in err


def test_dataset_errors_name_the_argument_and_the_class_once(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    text = f"dataset: {{name: CUB, args: {{root: '{missing}'}}}}\n"
    err = one_line_exit_2(capsys, ["train", config_file(tmp_path, text), "--output", str(tmp_path / "run")])
    assert "config key 'dataset.args.root': CUB: " in err
    assert err.count("CUB:") == 1


def test_help_and_version_do_not_import_torch():
    import subprocess
    import sys

    from _cli_helpers import command_env

    probe = (
        "import sys\n"
        "from deepmetric.cli.main import main\n"
        "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=command_env())
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout
    from deepmetric import __version__

    assert f"deepmetric {__version__}" in done.stdout
