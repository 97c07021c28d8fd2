"""Models in the ``deepmetric`` command: the built-in ones, your own factory named
``package.module:factory`` (examples/my_models), and ``weights`` loaded strictly."""

import json
import os
import sys

import pytest
import torch
from _cli_helpers import ROOT, write_config

from deepmetric.cli import components
from deepmetric.cli.config import DEFAULT_CONFIG, ConfigError, merge_config
from deepmetric.cli.main import main
from deepmetric.cli.models import MLP, ConvNet

pytest.importorskip("sklearn")

CUSTOM = """
seed: 1
epochs: 2
batch_size: 40
dataset: {{name: Digits, args: {{protocol: held_out_samples}}}}
model:
  name: my_models.nets:residual_net
  args: {{embedding_size: 12, widths: [8, 16]}}
{weights}
sampler: {{name: MPerClassSampler, args: {{m: 4}}}}
evaluation: {{zero_shot: false}}
"""


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples"))
    monkeypatch.setenv("DEEPMETRIC_PROJECTION", "pca")
    yield
    for name in [m for m in sys.modules if m == "my_models" or m.startswith("my_models.")]:
        del sys.modules[name]


def test_built_in_models_check_their_sizes():
    with pytest.raises(ValueError, match="embedding_size must be a positive integer, got 0"):
        MLP(64, embedding_size=0)
    with pytest.raises(ValueError, match="channels must be a list of positive integers"):
        ConvNet(channels=[8, -1])
    # an 8x8 digit goes through three pooling blocks
    assert ConvNet(in_channels=1, embedding_size=5)(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_your_own_model_trains_end_to_end_and_its_weights_load(tmp_path, examples_on_path, capsys):
    first = tmp_path / "first"
    assert main(["train", write_config(tmp_path, CUSTOM, weights=""), "--output", str(first), "--quiet"]) == 0
    report = (first / "report.md").read_text()
    assert "model `my_models.nets:residual_net` (12-d embeddings)" in report
    embeddings = torch.load(first / "held_out" / "embeddings.pt")["embeddings"]
    assert embeddings.shape[1] == 12  # read from the model's output
    # a second run starts from the first one's selected weights
    weights = f"  weights: {first / 'model.pt'}"
    second_dir = tmp_path / "second_cfg"
    second_dir.mkdir()
    config = merge_config(DEFAULT_CONFIG, {"model": {"name": "my_models.nets:residual_net",
                                                     "args": {"embedding_size": 12, "widths": [8, 16]},
                                                     "weights": str(first / "model.pt")}})
    model = components.build_model(config, (1, 8, 8))
    saved = torch.load(first / "model.pt")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    second = tmp_path / "second"
    assert main(["train", write_config(second_dir, CUSTOM, weights=weights), "--output", str(second),
                 "--quiet", "--epochs", "1"]) == 0
    assert json.loads((second / "metrics.json").read_text())["held_out"]["trained"]


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path, examples_on_path, capsys):
    from my_models.nets import residual_net

    path = tmp_path / "other.pt"
    torch.save(residual_net(embedding_size=12, widths=[8, 32]).state_dict(), path)
    config = merge_config(DEFAULT_CONFIG, {"model": {"name": "my_models.nets:residual_net",
                                                     "args": {"embedding_size": 12, "widths": [8, 16]},
                                                     "weights": str(path)}})
    with pytest.raises(ConfigError) as err:
        components.build_model(config, (1, 8, 8))
    assert err.value.key == "model.weights"
    assert "does not match the model: shape blocks.1.project.weight (32, 8, 1, 1) != (16, 8, 1, 1)" in str(err.value)
    state = residual_net(embedding_size=12, widths=[8, 16]).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["embed.bias"]
    torch.save(state, path)
    with pytest.raises(ConfigError, match="missing embed.bias; unexpected extra.weight"):
        components.build_model(config, (1, 8, 8))
    (tmp_path / "junk.pt").write_text("junk")
    config["model"]["weights"] = str(tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="is not a readable state dict"):
        components.build_model(config, (1, 8, 8))
    config["model"]["weights"] = str(tmp_path / "absent.pt")
    with pytest.raises(ConfigError, match="is not a file"):
        components.build_model(config, (1, 8, 8))


@pytest.mark.parametrize(
    "name,args,key,fragment",
    [
        ("no_such_package.nets:build", {}, "model.name", "cannot import module 'no_such_package'"),
        ("my_models.nets:residual_nett", {}, "model.name", "did you mean 'residual_net'?"),
        ("my_models.nets:ResidualBlock", {"channels_in": 1, "channels_out": 2}, "model", "shape (batch, size)"),
        ("my_models.nets:residual_net", {"widhts": [8]}, "model.args.widhts", "did you mean 'widths'?"),
        ("my_models:__doc__", {}, "model.name", "is not callable"),
        ("my_models.nets:", {}, "model.name", "'package.module:factory'"),
    ],
)
def test_bad_factories_are_named(examples_on_path, name, args, key, fragment):
    config = merge_config(DEFAULT_CONFIG, {"model": {"name": name, "args": args}})
    with pytest.raises(ConfigError) as err:
        model = components.build_model(config, (1, 8, 8))
        components.embedding_size(model, torch.randn(1, 8, 8), "cpu")
    assert err.value.key == key and fragment in str(err.value)


def test_a_factory_that_returns_no_module_is_refused(tmp_path, monkeypatch):
    (tmp_path / "not_a_model.py").write_text("def build():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = merge_config(DEFAULT_CONFIG, {"model": "not_a_model:build"})
    with pytest.raises(ConfigError, match="must return a torch.nn.Module, got int"):
        components.build_model(config, (1, 8, 8))
