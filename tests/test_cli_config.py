"""Config loading and validation of the ``deepmetric`` command: every problem is one line that
names the config key, exit status 2, no traceback."""

import pytest

from deepmetric.cli import components
from deepmetric.cli.config import DEFAULT_CONFIG, ConfigError, load_config, merge_config
from deepmetric.cli.main import main


def write_config(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_load_without_a_file():
    config = load_config()
    assert config["dataset"]["name"] == "Digits"
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
        ("device: tpu\n", "device", "'cpu', 'cuda'"),
        ("evaluation: {k: 0}\n", "evaluation.k", "positive integer"),
        ("evaluation: {metrics: []}\n", "evaluation.metrics", "non-empty list"),
        ("evaluation: {recall: 3}\n", "evaluation.recall", "unknown key"),
        ("loss: {args: {margin: 1}}\n", "loss", "class name or a mapping"),
        ("loss: {name: TripletMarginLoss, args: [1, 2]}\n", "loss.args", "must be a mapping"),
        ("loss: {name: TripletMarginLoss, weight: 2}\n", "loss.weight", "unknown key"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, text))
    assert err.value.key == key
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_config(tmp_path, "loss: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write_config(tmp_path, "- 1\n- 2\n"))


def test_unknown_class_names_list_the_allowed_ones():
    config = merge_config(DEFAULT_CONFIG, {"loss": "NoSuchLoss"})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=10, embedding_size=8)
    assert err.value.key == "loss.name"
    assert "unknown class 'NoSuchLoss'; allowed:" in str(err.value)
    assert "TripletMarginLoss" in str(err.value)
    config = merge_config(DEFAULT_CONFIG, {"optimizer": {"name": "Adamm"}})
    with pytest.raises(ConfigError, match="allowed: .*Adam"):
        components.build_optimizer(config, [])


def test_bad_arguments_name_the_args_key():
    config = merge_config(DEFAULT_CONFIG, {"loss": {"name": "TripletMarginLoss", "args": {"margn": 1}}})
    with pytest.raises(ConfigError) as err:
        components.build_loss(config, num_classes=10, embedding_size=8)
    assert err.value.key == "loss.args" and "margn" in str(err.value)
    assert "arguments: margin, swap, smooth_loss, triplets_per_anchor" in str(err.value)


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


def test_command_line_prints_one_line_and_exits_2(tmp_path, capsys):
    code = main(["train", write_config(tmp_path, "epochs: -1\n"), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "deepmetric: error: config key 'epochs': must be a positive integer, got -1"
    assert main(["evaluate", "--output", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--resume", "--output", str(tmp_path / "fresh")]) == 2
