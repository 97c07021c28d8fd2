"""Build the objects a config names, turning every failure into a one-line ConfigError that names
the config key at fault (``loss.args.margin``, not an internal class)."""

import importlib
import inspect
import os
import re

import torch

from .config import ConfigError, component, did_you_mean, one_line, parse_component
from .models import MODELS

IMAGE_DATASETS = ("CUB", "Cars196", "StanfordOnlineProducts", "INaturalist2018")
FOLDER_DATASETS = ("ImageFolderDataset", "CSVDataset")
EMBEDDED_DATASETS = ("Glyphs", "Digits")
DATASETS = EMBEDDED_DATASETS + IMAGE_DATASETS + FOLDER_DATASETS

# Classes of deepmetric.losses / samplers that a config cannot use, and why: the command trains one
# model on labelled items, one batch of (items, labels) at a time.
PYTHON_ONLY_LOSSES = {
    "CLIPLoss": "takes two batches of paired embeddings (for example images and their captions), "
    "not labelled items; use it from Python (see examples/clip_pairs.py)",
    "SigLIPLoss": "takes two batches of paired embeddings, not labelled items; use it from Python",
    "CachedBatchLoss": "wraps a model and another loss object; use it from Python",
    "VICRegLoss": "takes the embeddings of two views of the same items, not labels; use it from Python",
    "ManifoldLoss": "takes no labels (it assigns items to proxies itself); use it from Python",
    "SelfSupervisedLoss": "wraps a loss for two views of the same items, not labelled items; "
    "use it from Python",
    "CrossBatchMemory": "wraps another loss object; use it from Python",
    "MultipleLosses": "wraps other loss objects; use it from Python",
}
PYTHON_ONLY_SAMPLERS = {
    "TuplesToWeightsSampler": "weights items with a model and a miner of your own; use it from Python",
    "FixedSetOfTriplets": "feeds ready-made triplets for offline training; use it from Python",
}
SAMPLERS = ("MPerClassSampler", "HierarchicalSampler")
ABSTRACT_LOSSES = ("BaseMetricLossFunction", "GenericPairLoss", "BaseLossWrapper")


def loss_names():
    from .. import losses

    names = []
    for name in getattr(losses, "__all__", dir(losses)):
        obj = getattr(losses, name)
        if not (inspect.isclass(obj) and issubclass(obj, losses.BaseMetricLossFunction)):
            continue
        if name in ABSTRACT_LOSSES or name in PYTHON_ONLY_LOSSES:
            continue
        names.append(name)
    return sorted(names)


def module_classes(module, base=None, exclude=()):
    names = []
    for name in getattr(module, "__all__", dir(module)):
        obj = getattr(module, name)
        if inspect.isclass(obj) and (base is None or issubclass(obj, base)) and name not in exclude:
            names.append(name)
    return sorted(names)


def lookup(key, name, allowed, namespace, unusable=None):
    """The class called ``name`` among ``allowed``; else an error with the closest name."""
    if unusable and name in unusable:
        raise ConfigError(f"{key}.name", f"{name} cannot be used in a config: it {unusable[name]}")
    if name not in allowed:
        raise ConfigError(
            f"{key}.name",
            f"unknown class {name!r}{did_you_mean(name, allowed)}; allowed: {', '.join(allowed)}",
        )
    return namespace[name] if isinstance(namespace, dict) else getattr(namespace, name)


# ----------------------------------------------------------------------------------------------
# arguments


def accepted_arguments(cls):
    """``(names, defaults)`` of the keyword arguments ``cls(...)`` accepts, following ``**kwargs``
    up the class hierarchy (a loss passes them on to its base classes); ``names`` is None when
    the hierarchy accepts any keyword."""
    names, defaults = [], {}
    classes = cls.__mro__ if inspect.isclass(cls) else (cls,)
    for klass in classes:
        if klass in (object, torch.nn.Module):
            return names, defaults
        init = klass.__dict__.get("__init__") if inspect.isclass(klass) else klass
        if init is None:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None, defaults
        open_ended = False
        for p in params[1:] if inspect.isclass(klass) else params:
            if p.kind == p.VAR_KEYWORD:
                open_ended = True
            elif p.kind != p.VAR_POSITIONAL and p.name not in defaults and p.name not in names:
                names.append(p.name)
                defaults[p.name] = p.default
        if not open_ended:
            return names, defaults
    return None, defaults


def check_arguments(key, cls, args, filled=()):
    """``args`` with numbers written as strings (``lr: 1e-3`` is a string in YAML) converted,
    after checking every name against what ``cls`` accepts; ``filled`` are passed by the command."""
    names, defaults = accepted_arguments(cls)
    checked = {}
    for name, value in args.items():
        if names is not None and name not in names:
            offered = [n for n in names if n not in filled]
            raise ConfigError(
                f"{key}.args.{name}",
                f"{_name(cls)} has no argument {name!r}{did_you_mean(name, offered)}; "
                f"arguments: {', '.join(offered)}",
            )
        checked[name] = _coerce(f"{key}.args.{name}", value, defaults.get(name, inspect.Parameter.empty))
    return checked


def _coerce(key, value, default):
    if isinstance(default, bool) or default is inspect.Parameter.empty or default is None:
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(key, f"must be a number, got {value!r}") from None
            return int(number) if isinstance(default, int) and number.is_integer() else number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {value!r}")
    return value


def instantiate(key, cls, *args, **kwargs):
    """``cls(*args, **kwargs)``, reporting a failure against the argument it names, if any."""
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as err:
        raise ConfigError(argument_at_fault(f"{key}.args", err, kwargs), strip_prefix(cls, err)) from None


def argument_at_fault(args_key, err, kwargs):
    """``args_key.name`` for the first argument the error message names, else ``args_key``."""
    message = str(err)
    missing = re.search(r"missing \d+ required (?:positional |keyword-only )?arguments?: '(\w+)'", message)
    if missing:
        return f"{args_key}.{missing.group(1)}"
    for name in kwargs:
        if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message):
            return f"{args_key}.{name}"
    return args_key


def strip_prefix(cls, err):
    """``"Class: message"`` with the class named once, however the error was phrased."""
    message = one_line(err)
    prefix = f"{_name(cls)}:"
    message = message[len(prefix) :].strip() if message.startswith(prefix) else message
    return f"{_name(cls)}: {message}"


def _name(obj):
    return getattr(obj, "__name__", type(obj).__name__)


# ----------------------------------------------------------------------------------------------
# models


def build_model(config, input_shape, load_weights=True):
    """The model the config names: a built-in one, or ``package.module:factory`` called with
    ``args``; then ``weights`` (a local state dict) loaded strictly, unless ``load_weights`` is
    False (a trained run loads its own ``model.pt`` instead)."""
    name, args, extras = component(config, "model")
    if ":" in name:
        factory = import_factory(name)
        model = _call_factory(name, factory, check_arguments("model", factory, args))
    else:
        cls = lookup("model", name, sorted(MODELS), MODELS)
        filled = {}
        if cls is MODELS["MLP"]:
            filled["input_size"] = int(torch.Size(input_shape).numel())
        elif cls is MODELS["ConvNet"] and len(input_shape) == 3:
            filled["in_channels"] = int(input_shape[0])
        args = check_arguments("model", cls, args, filled)
        model = instantiate("model", cls, **{**filled, **args})
    if load_weights and extras.get("weights") is not None:
        load_state_dict_file(model, extras["weights"])
    return model


def import_factory(spec):
    """The callable ``package.module:attribute`` names (the package on PYTHONPATH or installed)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError("model.name", f"must be a built-in model or 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(
            "model.name",
            f"cannot import module {err.name!r} for {spec!r}: install the package, or add the folder "
            f"holding it to PYTHONPATH (now {os.environ.get('PYTHONPATH', 'unset')!r})",
        ) from None
    except Exception as err:  # the user's module failed while importing: say where
        raise ConfigError(
            "model.name", f"importing {module_name!r} failed: {type(err).__name__}: {one_line(err)}"
        ) from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [n for n in dir(target) if not n.startswith("_")]
            raise ConfigError(
                "model.name", f"{module_name!r} has no attribute {part!r}{did_you_mean(part, public)}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError("model.name", f"{spec!r} is not callable (got {type(target).__name__})")
    return target


def _call_factory(spec, factory, args):
    try:
        model = factory(**args)
    except TypeError as err:
        raise ConfigError("model.args", f"{spec}: {one_line(err)}") from None
    except (ValueError, AssertionError, RuntimeError) as err:
        raise ConfigError(argument_at_fault("model.args", err, args), f"{spec}: {one_line(err)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("model.name", f"{spec} must return a torch.nn.Module, got {type(model).__name__}")
    return model


def load_state_dict_file(model, path):
    """Load the state dict at ``path`` into ``model`` (strict: every key must match)."""
    key = "model.weights"
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ConfigError(key, f"{path!r} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, or holds objects other than tensors
        raise ConfigError(key, f"{path!r} is not a readable state dict: {one_line(err)}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(key, f"{path!r} must hold a state dict (parameter names to tensors)")
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", resized)):
        if keys:
            problems.append(f"{what} {_few(keys)}")
    if problems:
        raise ConfigError(key, f"{path!r} does not match the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def _few(keys, n=4):
    shown = ", ".join(keys[:n])
    return f"{shown} (+{len(keys) - n} more)" if len(keys) > n else shown


def embedding_size(model, example, device):
    """Width of the model's output for one ``example`` item (the model must return ``(1, d)``)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example.unsqueeze(0).to(device))
    except Exception as err:
        raise ConfigError(
            "model",
            f"the model fails on an item of shape {tuple(example.shape)}: {type(err).__name__}: "
            f"{one_line(err)}",
        ) from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ConfigError("model", f"must return embeddings of shape (batch, size), got {shape} for one item")
    return int(out.shape[1])


# ----------------------------------------------------------------------------------------------
# loss, miner, sampler, optimizer, scheduler


def build_loss(config, num_classes, embedding_size, multi_label=False):
    """The configured loss. ``multi_label``: the labels are multi-hot rows, which only the losses
    that decide positive pairs from the labels take (positive when two items share a class)."""
    from .. import distances, losses, reducers, regularizers

    name, args, extras = component(config, "loss")
    cls = lookup("loss", name, loss_names(), losses, PYTHON_ONLY_LOSSES)
    filled = {}
    names, defaults = accepted_arguments(cls)
    if multi_label:
        _check_multi_label_loss(name, names, defaults)
    elif names and "num_classes" in names and "num_classes" not in args:
        filled["num_classes"] = num_classes
    for size_name in ("embedding_size", "descriptors_dim"):
        if names and size_name in names and size_name not in args:
            filled[size_name] = embedding_size
    args = {**filled, **check_arguments("loss", cls, args, filled)}
    parts = {
        "distance": (distances, distances.BaseDistance),
        "reducer": (reducers, reducers.BaseReducer),
        "embedding_regularizer": (regularizers, regularizers.BaseRegularizer),
    }
    for part, entry in extras.items():
        if part not in parts:
            continue
        module, base = parts[part]
        part_name, part_args, _ = parse_component(entry, f"loss.{part}")
        allowed = module_classes(module, base, exclude=(base.__name__,))
        part_cls = lookup(f"loss.{part}", part_name, allowed, module)
        part_args = check_arguments(f"loss.{part}", part_cls, part_args)
        args[part] = instantiate(f"loss.{part}", part_cls, **part_args)
    return instantiate("loss", cls, **args)


# Losses without a class-sized parameter that still need one class per item (their pairs or
# lists are built from equal labels only).
ONE_CLASS_PER_ITEM_LOSSES = ("InstanceLoss", "NPairsLoss", "SmoothAPLoss")


def _check_multi_label_loss(name, names, defaults):
    """Refuse a loss that cannot take multi-hot labels: one that learns a weight or proxy per
    class (``num_classes`` required), or one of ``ONE_CLASS_PER_ITEM_LOSSES``."""
    per_class = bool(names) and "num_classes" in names and defaults["num_classes"] is inspect.Parameter.empty
    if per_class or name in ONE_CLASS_PER_ITEM_LOSSES:
        why = "learns one weight or proxy per class" if per_class else "builds its tuples from equal labels"
        raise ConfigError(
            "loss.name",
            f"{name} {why} and needs one class per item, and this dataset is multi-label (several "
            "classes per item): use a pair-based loss that takes multi-hot labels, e.g. "
            "MultiSimilarityLoss, ContrastiveLoss, TripletMarginLoss, NTXentLoss or SupConLoss",
        )


def build_miner(config):
    parsed = component(config, "miner")
    if parsed is None:
        return None
    from .. import miners

    name, args, _ = parsed
    allowed = module_classes(
        miners, miners.BaseMiner, exclude=("BaseMiner", "BaseTupleMiner", "BaseSubsetBatchMiner")
    )
    cls = lookup("miner", name, allowed, miners)
    return instantiate("miner", cls, **check_arguments("miner", cls, args))


def build_rerank(config):
    """The post-processing step of ``evaluation.rerank`` (``KReciprocalRerank`` or
    ``QueryExpansion`` with its arguments) for the accuracy calculator, or None."""
    parsed = parse_component(config["evaluation"]["rerank"], "evaluation.rerank")
    if parsed is None:
        return None
    from ..evaluation import rerank

    name, args, _ = parsed
    allowed = ["KReciprocalRerank", "QueryExpansion"]
    cls = lookup("evaluation.rerank", name, allowed, rerank)
    return instantiate("evaluation.rerank", cls, **check_arguments("evaluation.rerank", cls, args))


def build_sampler(config, labels, super_labels, global_batch_size):
    """The configured index sampler over the training items, drawing global batches of
    ``global_batch_size`` (see :class:`~deepmetric.cli.distributed.GlobalBatches`), or None."""
    parsed = component(config, "sampler")
    if parsed is None:
        return None
    from .. import samplers

    name, args, _ = parsed
    cls = lookup("sampler", name, list(SAMPLERS), samplers, PYTHON_ONLY_SAMPLERS)
    if getattr(labels, "ndim", 1) == 2:
        raise ConfigError(
            "sampler.name",
            f"{name} draws batches by class and needs one class per item, and this dataset is "
            "multi-label (several classes per item): set 'sampler: null' for shuffled batches",
        )
    if name == "MPerClassSampler":
        filled = {"batch_size": global_batch_size, "length_before_new_iter": len(labels)}
        args = {**filled, **check_arguments("sampler", cls, args, ("labels", *filled))}
        _check_m_per_class(args, len(set(int(x) for x in labels)))
        # one process's view: GlobalBatches hands every process its share of each global batch
        return instantiate("sampler", cls, labels, num_replicas=1, rank=0, **args)
    if super_labels is None:
        raise ConfigError(
            "sampler.name",
            f"HierarchicalSampler needs a dataset with super classes (Glyphs has them: its "
            f"categories), and {component(config, 'dataset')[0]} has none",
        )
    import numpy as np

    filled = {"batch_size": global_batch_size}
    args = {**filled, **check_arguments("sampler", cls, args, ("labels", *filled))}
    two_level = np.stack([np.asarray(labels), np.asarray(super_labels)], axis=1)
    return instantiate("sampler", cls, two_level, **args)


def _check_m_per_class(args, num_classes):
    """The batch constraints of MPerClassSampler, phrased for the keys a user sets."""
    m, batch = args.get("m"), args["batch_size"]
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ConfigError("sampler.args.m", f"must be a positive integer, got {m!r}")
    if m * num_classes < batch:
        raise ConfigError(
            "sampler.args.m",
            f"m={m} x {num_classes} training classes = {m * num_classes} items, fewer than batch_size "
            f"{batch}: raise m to at least {-(-batch // num_classes)} or lower batch_size",
        )
    if batch % m:
        raise ConfigError("batch_size", f"must be a multiple of the sampler's m ({m}), got {batch}")


def build_optimizer(config, parameters):
    name, args, _ = component(config, "optimizer")
    allowed = module_classes(torch.optim, torch.optim.Optimizer, exclude=("Optimizer",))
    cls = lookup("optimizer", name, allowed, torch.optim)
    return instantiate("optimizer", cls, parameters, **check_arguments("optimizer", cls, args, ("params",)))


def build_scheduler(config, optimizer):
    """The configured scheduler, stepped once per epoch. ``CosineAnnealingLR`` without ``T_max``
    anneals over the run's ``epochs``."""
    parsed = component(config, "scheduler")
    if parsed is None:
        return None
    name, args, _ = parsed
    schedulers = torch.optim.lr_scheduler
    base = schedulers.LRScheduler
    allowed = module_classes(schedulers, base, exclude=("LRScheduler", "_LRScheduler"))
    allowed = [n for n in allowed if n not in ("ChainedScheduler", "SequentialLR")]
    cls = lookup("scheduler", name, allowed, schedulers)
    filled = {}
    if name == "CosineAnnealingLR" and "T_max" not in args:
        filled["T_max"] = config["epochs"]
    args = {**filled, **check_arguments("scheduler", cls, args, ("optimizer", *filled))}
    return instantiate("scheduler", cls, optimizer, **args)


def check_device(config):
    """The torch device of the config, after checking it exists on this machine."""
    device = config["device"]
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{device!r} asked for, but torch sees no CUDA GPU here; use 'cpu'")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                "device", f"{device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return torch.device(device)
