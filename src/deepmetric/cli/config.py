"""The run configuration of the ``deepmetric`` command: defaults, YAML loading and validation.

A config is a mapping. Components (dataset, model, loss, miner, sampler, optimizer, scheduler)
are written ``{name: ClassName, args: {...}}`` (or just ``ClassName``) and are looked up among
the library's own classes, so a config names exactly what a Python user would import. A model
may instead name any factory as ``package.module:function`` and load ``weights``; a loss may take
``distance``, ``reducer`` and ``embedding_regularizer`` components. Every problem is reported as a
:class:`ConfigError` that names the config key at fault and, where it helps, the allowed values.

This module imports neither torch nor yaml at import time: ``deepmetric --help`` stays fast.
"""

import copy
import difflib
import os

# The default recipe: a small ConvNet on the embedded Glyphs (characters drawn in matplotlib's
# fonts). It trains on half of the characters and is evaluated on the other, unseen half.
DEFAULT_CONFIG = {
    "seed": 0,
    "epochs": 8,
    "batch_size": 128,
    "device": "cpu",
    "num_workers": 0,
    "dataset": {"name": "Glyphs", "args": {"samples_per_class": 40}},
    "model": {"name": "ConvNet", "args": {"channels": [32, 64, 128], "embedding_size": 64}},
    "loss": {"name": "MultiSimilarityLoss", "args": {"alpha": 2, "beta": 40, "base": 0.5}},
    "miner": {"name": "MultiSimilarityMiner", "args": {"epsilon": 0.1}},
    "sampler": {"name": "MPerClassSampler", "args": {"m": 4}},
    "optimizer": {"name": "Adam", "args": {"lr": 0.002}},
    "scheduler": {"name": "CosineAnnealingLR"},
    "evaluation": {
        "metrics": ["precision_at_1", "r_precision", "mean_average_precision_at_r"],
        "k": "max_bin_count",
        "zero_shot": True,
        "validation_fraction": 0.2,
        "held_out_fraction": 0.2,
        "select": "mean_average_precision_at_r",
        "patience": None,
        "rerank": None,
        "threshold": "best_f1",
    },
}

COMPONENT_KEYS = ("dataset", "model", "loss", "miner", "sampler", "optimizer", "scheduler")
OPTIONAL_COMPONENTS = ("miner", "sampler", "scheduler")
LOSS_PARTS = ("distance", "reducer", "embedding_regularizer")


class ConfigError(Exception):
    """A problem with the configuration, a file or an argument, phrased for the command line
    (one line). ``key`` is the config key at fault, or None."""

    def __init__(self, key, message):
        self.key = key
        super().__init__(f"config key '{key}': {message}" if key else message)


def did_you_mean(name, choices):
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        raise ConfigError(None, f"config file {path!r} is not valid YAML: {one_line(err)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(None, f"config file {path!r} cannot be read: {one_line(err)}") from None
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
            raise ConfigError(
                key, f"unknown key{did_you_mean(key, DEFAULT_CONFIG)}; allowed: {', '.join(DEFAULT_CONFIG)}"
            )
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
    allowed = {"name", "args"}
    if key == "loss":
        allowed |= set(LOSS_PARTS)
    if key == "model":
        allowed.add("weights")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed))
        raise ConfigError(
            f"{key}.{unknown[0]}", f"unknown key{did_you_mean(unknown[0], allowed)}; allowed: {allowed_text}"
        )
    if not isinstance(entry["name"], str) or not entry["name"]:
        raise ConfigError(f"{key}.name", f"must be a class name, got {entry['name']!r}")
    args = entry.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{key}.args", f"must be a mapping of argument names to values, got {args!r}")
    extras = {k: entry[k] for k in (*LOSS_PARTS, "weights") if k in entry}
    return entry["name"], args, extras


def validate_config(config):
    """Checks the scalar values; component names and arguments are checked when built."""
    for key in ("epochs", "batch_size"):
        _require_int(key, config[key], low=1)
    _require_int("seed", config["seed"], low=0)
    _require_int("num_workers", config["num_workers"], low=0)
    device = config["device"]
    if not isinstance(device, str) or not (
        device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise ConfigError("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    evaluation = config["evaluation"]
    if not isinstance(evaluation, dict):
        raise ConfigError(
            "evaluation", f"must be a mapping with keys {', '.join(DEFAULT_CONFIG['evaluation'])}"
        )
    unknown = sorted(set(evaluation) - set(DEFAULT_CONFIG["evaluation"]))
    if unknown:
        allowed = ", ".join(DEFAULT_CONFIG["evaluation"])
        raise ConfigError(
            f"evaluation.{unknown[0]}",
            f"unknown key{did_you_mean(unknown[0], DEFAULT_CONFIG['evaluation'])}; allowed: {allowed}",
        )
    metrics = evaluation["metrics"]
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("evaluation.metrics", f"must be a non-empty list of metric names, got {metrics!r}")
    k = evaluation["k"]
    if k is not None and k != "max_bin_count" and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ConfigError("evaluation.k", f"must be null, 'max_bin_count' or a positive integer, got {k!r}")
    if not isinstance(evaluation["zero_shot"], bool):
        raise ConfigError("evaluation.zero_shot", f"must be true or false, got {evaluation['zero_shot']!r}")
    for key in ("validation_fraction", "held_out_fraction"):
        value = evaluation[key]
        if not _is_number(value) or not 0 <= value < 1:
            raise ConfigError(f"evaluation.{key}", f"must be a number in [0, 1), got {value!r}")
    if evaluation["validation_fraction"] + evaluation["held_out_fraction"] >= 1:
        raise ConfigError(
            "evaluation.held_out_fraction",
            "validation_fraction + held_out_fraction must leave items to train on (sum below 1), got "
            f"{evaluation['validation_fraction']} + {evaluation['held_out_fraction']}",
        )
    if evaluation["select"] not in metrics:
        raise ConfigError(
            "evaluation.select",
            f"must be one of evaluation.metrics ({', '.join(metrics)}), got {evaluation['select']!r}",
        )
    if _lower_is_better(evaluation["select"]):
        raise ConfigError(
            "evaluation.select",
            f"{evaluation['select']} is better when lower; the best epoch is the one with the highest "
            "score, so select a metric where higher is better (e.g. roc_auc or tar_at_far_<rate>)",
        )
    if evaluation["patience"] is not None:
        _require_int("evaluation.patience", evaluation["patience"], low=1, null_ok=True)
    parse_component(evaluation["rerank"], "evaluation.rerank")
    threshold_target(evaluation["threshold"])
    for key in COMPONENT_KEYS:
        parse_component(config[key], key)


def threshold_target(value):
    """The calibration target of ``evaluation.threshold``: ``"best_f1"``, or a one-entry mapping
    ``{fmr: 0.001}`` / ``{precision: 0.99}`` / ``{recall: 0.9}`` (as ``calibrate`` takes it)."""
    if value == "best_f1":
        return value
    names = ("fmr", "precision", "recall")
    if isinstance(value, dict) and len(value) == 1:
        ((name, rate),) = value.items()
        # a false match rate of 1 accepts everything; precision and recall of 1 are real goals
        if name in names and _is_number(rate) and 0 < rate and (rate < 1 or (rate == 1 and name != "fmr")):
            return (name, float(rate))
    raise ConfigError(
        "evaluation.threshold",
        "must be 'best_f1' or one of {fmr: r}, {precision: p}, {recall: r} with a rate in (0, 1) "
        f"(precision and recall may be 1), got {value!r}",
    )


def _lower_is_better(metric):
    """Error rates: the equal error rate and the false non-match rate at a false match rate."""
    return metric == "eer" or metric.startswith("fnmr_at_fmr_")


def _require_int(key, value, low, null_ok=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        what = "a positive integer" if low == 1 else "a non-negative integer"
        raise ConfigError(key, f"must be {what}{' or null' if null_ok else ''}, got {value!r}")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def dump_config(config, path):
    import yaml

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)


def one_line(err):
    return " ".join(str(err).split())
