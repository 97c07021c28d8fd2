"""Build the objects a config names, turning every failure into a one-line ConfigError."""

import inspect

import torch

from .config import ConfigError, component, parse_component
from .models import MODELS

IMAGE_DATASETS = ("CUB", "Cars196", "StanfordOnlineProducts", "INaturalist2018")
FOLDER_DATASETS = ("ImageFolderDataset", "CSVDataset")
DATASETS = ("Digits",) + IMAGE_DATASETS + FOLDER_DATASETS
# Losses whose call needs something other than (embeddings, labels).
LOSSES_WITHOUT_LABELS = ("ManifoldLoss", "VICRegLoss", "CLIPLoss")
ABSTRACT_LOSSES = ("BaseMetricLossFunction", "GenericPairLoss", "BaseLossWrapper")


def loss_names():
    from .. import losses

    names = []
    for name in getattr(losses, "__all__", dir(losses)):
        obj = getattr(losses, name)
        if not (inspect.isclass(obj) and issubclass(obj, losses.BaseMetricLossFunction)):
            continue
        if name in ABSTRACT_LOSSES or name in LOSSES_WITHOUT_LABELS:
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


def lookup(key, name, allowed, namespace):
    if name not in allowed:
        raise ConfigError(f"{key}.name", f"unknown class {name!r}; allowed: {', '.join(allowed)}")
    return namespace[name] if isinstance(namespace, dict) else getattr(namespace, name)


def instantiate(key, cls, *args, **kwargs):
    """``cls(*args, **kwargs)``, reporting bad arguments against ``key``."""
    try:
        return cls(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{key}.args", f"{cls.__name__}: {_message(err)}{_allowed_args(cls)}") from None
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"{key}.args", f"{cls.__name__}: {_message(err)}") from None


def build_model(config, input_shape):
    name, args, _ = component(config, "model")
    cls = lookup("model", name, sorted(MODELS), MODELS)
    if cls is MODELS["MLP"]:
        args = {"input_size": int(torch.Size(input_shape).numel()), **args}
    return instantiate("model", cls, **args)


def build_loss(config, num_classes, embedding_size):
    from .. import distances, losses, reducers, regularizers

    name, args, extras = component(config, "loss")
    cls = lookup("loss", name, loss_names(), losses)
    args = dict(args)
    params = inspect.signature(cls).parameters
    if "num_classes" in params and "num_classes" not in args:
        args["num_classes"] = num_classes
    if "embedding_size" in params and "embedding_size" not in args:
        args["embedding_size"] = embedding_size
    parts = {
        "distance": (distances, distances.BaseDistance),
        "reducer": (reducers, reducers.BaseReducer),
        "embedding_regularizer": (regularizers, regularizers.BaseRegularizer),
    }
    for part, entry in extras.items():
        module, base = parts[part]
        part_name, part_args, _ = parse_component(entry, f"loss.{part}")
        allowed = module_classes(module, base, exclude=(base.__name__,))
        part_cls = lookup(f"loss.{part}", part_name, allowed, module)
        args[part] = instantiate(f"loss.{part}", part_cls, **part_args)
    return instantiate("loss", cls, **args)


def build_miner(config):
    parsed = component(config, "miner")
    if parsed is None:
        return None
    from .. import miners

    name, args, _ = parsed
    allowed = module_classes(miners, miners.BaseMiner, exclude=("BaseMiner",))
    return instantiate("miner", lookup("miner", name, allowed, miners), **args)


def build_sampler(config, labels, batch_size):
    parsed = component(config, "sampler")
    if parsed is None:
        return None
    from .. import samplers

    name, args, _ = parsed
    allowed = [n for n in module_classes(samplers) if n in ("MPerClassSampler",)]
    cls = lookup("sampler", name, allowed, samplers)
    args = {"batch_size": batch_size, "length_before_new_iter": len(labels), **args}
    return instantiate("sampler", cls, labels, **args)


def build_optimizer(config, parameters):
    name, args, _ = component(config, "optimizer")
    allowed = module_classes(torch.optim, torch.optim.Optimizer, exclude=("Optimizer",))
    cls = lookup("optimizer", name, allowed, torch.optim)
    return instantiate("optimizer", cls, parameters, **args)


def build_scheduler(config, optimizer):
    parsed = component(config, "scheduler")
    if parsed is None:
        return None
    name, args, _ = parsed
    schedulers = torch.optim.lr_scheduler
    base = schedulers.LRScheduler
    allowed = module_classes(schedulers, base, exclude=("LRScheduler", "_LRScheduler"))
    cls = lookup("scheduler", name, allowed, schedulers)
    return instantiate("scheduler", cls, optimizer, **args)


def _message(err):
    return " ".join(str(err).split())


def _allowed_args(cls):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return ""
    names = [p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    return f" (arguments: {', '.join(names)})" if names else ""
