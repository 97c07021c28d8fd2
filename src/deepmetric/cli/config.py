"""The run configuration of the ``deepmetric`` command: defaults, YAML loading and validation.

A config is a mapping. Components (dataset, model, loss, miner, sampler, optimizer, scheduler)
are written ``{name: ClassName, args: {...}}`` (or just ``ClassName``) and are looked up among
the library's own classes, so a config names exactly what a Python user would import. A loss may
also take ``distance``, ``reducer`` and ``embedding_regularizer`` components. Every problem is
reported as a :class:`ConfigError` that names the config key and, where it helps, the allowed
values.
"""

import copy
import os

DEFAULT_CONFIG = {
    "seed": 0,
    "epochs": 20,
    "batch_size": 160,
    "device": "cpu",
    "num_workers": 0,
    "dataset": {"name": "Digits", "args": {"protocol": "held_out_samples"}},
    "model": {"name": "MLP", "args": {"hidden_sizes": [256], "embedding_size": 64}},
    "loss": {"name": "MultiSimilarityLoss", "args": {"alpha": 2, "beta": 40, "base": 0.5}},
    "miner": {"name": "MultiSimilarityMiner", "args": {"epsilon": 0.1}},
    "sampler": {"name": "MPerClassSampler", "args": {"m": 32}},
    "optimizer": {"name": "Adam", "args": {"lr": 0.002}},
    "scheduler": {"name": "CosineAnnealingLR", "args": {"T_max": 20}},
    "evaluation": {
        "metrics": ["precision_at_1", "r_precision", "mean_average_precision_at_r"],
        "k": None,
        "zero_shot": True,
    },
}

COMPONENT_KEYS = ("dataset", "model", "loss", "miner", "sampler", "optimizer", "scheduler")
OPTIONAL_COMPONENTS = ("miner", "sampler", "scheduler")
LOSS_PARTS = ("distance", "reducer", "embedding_regularizer")


class ConfigError(Exception):
    """A problem with the configuration, phrased for the command line (one line)."""

    def __init__(self, key, message):
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else message)


def load_config(path=None, overrides=None):
    """The resolved config: defaults, then the YAML file at ``path``, then ``overrides``."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        config = merge_config(config, read_yaml(path))
    if overrides:
        config = merge_config(config, overrides)
    validate_config(config)
    return config


def read_yaml(path):
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(None, f"config file {path!r} does not exist")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(None, f"config file {path!r} is not valid YAML: {_one_line(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(None, f"config file {path!r} must hold a mapping, got {type(data).__name__}")
    return data


def merge_config(base, update):
    """``update`` over ``base``: a component given by the user replaces the default one
    (its arguments do not mix with another class's), ``evaluation`` is merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key not in DEFAULT_CONFIG:
            raise ConfigError(key, f"unknown key; allowed: {', '.join(DEFAULT_CONFIG)}")
        if key == "evaluation" and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def component(config, key):
    """``(name, args, extras)`` of a component entry, or ``None`` for an absent optional one."""
    entry = config[key] if key in config else None
    return parse_component(entry, key)


def parse_component(entry, key):
    if entry is None:
        if key.split(".")[0] in OPTIONAL_COMPONENTS or "." in key:
            return None
        raise ConfigError(key, "is required")
    if isinstance(entry, str):
        return entry, {}, {}
    if not isinstance(entry, dict) or "name" not in entry:
        raise ConfigError(key, "must be a class name or a mapping with 'name' and optional 'args'")
    allowed = {"name", "args"} | (set(LOSS_PARTS) if key == "loss" else set())
    unknown = set(entry) - allowed
    if unknown:
        allowed_text = ", ".join(sorted(allowed))
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", f"unknown key; allowed: {allowed_text}")
    args = entry.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{key}.args", f"must be a mapping of argument names to values, got {args!r}")
    extras = {k: entry[k] for k in LOSS_PARTS if k in entry}
    return entry["name"], args, extras


def validate_config(config):
    """Checks the scalar values; component names and arguments are checked when built."""
    for key in ("epochs", "batch_size"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(key, f"must be a positive integer, got {value!r}")
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool):
        raise ConfigError("seed", f"must be an integer, got {config['seed']!r}")
    if not isinstance(config["num_workers"], int) or config["num_workers"] < 0:
        raise ConfigError("num_workers", f"must be a non-negative integer, got {config['num_workers']!r}")
    if config["device"] not in ("cpu", "cuda") and not str(config["device"]).startswith("cuda:"):
        raise ConfigError("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {config['device']!r}")
    evaluation = config["evaluation"]
    if not isinstance(evaluation, dict):
        raise ConfigError("evaluation", "must be a mapping with metrics, k and zero_shot")
    unknown = set(evaluation) - set(DEFAULT_CONFIG["evaluation"])
    if unknown:
        allowed = ", ".join(DEFAULT_CONFIG["evaluation"])
        raise ConfigError(f"evaluation.{sorted(unknown)[0]}", f"unknown key; allowed: {allowed}")
    metrics = evaluation["metrics"]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("evaluation.metrics", f"must be a non-empty list of metric names, got {metrics!r}")
    k = evaluation["k"]
    if k is not None and k != "max_bin_count" and (not isinstance(k, int) or k < 1):
        raise ConfigError("evaluation.k", f"must be null, 'max_bin_count' or a positive integer, got {k!r}")
    if not isinstance(evaluation["zero_shot"], bool):
        raise ConfigError("evaluation.zero_shot", f"must be true or false, got {evaluation['zero_shot']!r}")
    for key in COMPONENT_KEYS:
        parse_component(config[key], key)


def dump_config(config, path):
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def _one_line(err):
    return " ".join(str(err).split())
