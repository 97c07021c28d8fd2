"""Shared helpers and module-wide settings (imported as ``c_f`` throughout the library).

The module globals ``LOGGER_NAME``, ``LOGGER``, ``NUMPY_RANDOM`` and ``COLLECT_STATS`` may be
reassigned by users; library code always reads them through this module at call time.

pytorch-metric-learning's ``common_functions`` also holds training helpers (saving and loading
models, data loaders, ``EmbeddingDataset``, ``sqlite_obj_to_dict``). They live in
:mod:`deepmetric.training` and stay reachable as ``c_f.<name>``: the first access imports them
(``__getattr__`` below), so importing this module never loads a higher layer.
"""

import collections
import importlib
import logging

import numpy as np
import torch

from ..ops import dtypes as _dtypes
from .errors import ArgumentError, MissingInputError

LOGGER_NAME = "PML"
LOGGER = logging.getLogger(LOGGER_NAME)
NUMPY_RANDOM = np.random
COLLECT_STATS = False


def set_logger_name(name):
    """Send all library logging to the logger called ``name``."""
    global LOGGER_NAME, LOGGER
    LOGGER_NAME = name
    LOGGER = logging.getLogger(name)


# ----------------------------------------------------------------------------------------------
# dtype-aware finite sentinels: +-inf would overflow to NaN in float16 arithmetic.
pos_inf, neg_inf, small_val = _dtypes.pos_inf, _dtypes.neg_inf, _dtypes.small_val


# ----------------------------------------------------------------------------------------------
# small conversions


def is_list_or_tuple(x):
    return isinstance(x, (list, tuple))


def try_next_on_generator(gen, iterable):
    """Next item of ``gen``; restart from ``iterable`` when it is exhausted."""
    try:
        return gen, next(gen)
    except StopIteration:
        gen = iter(iterable)
        return gen, next(gen)


def numpy_to_torch(v):
    try:
        return torch.from_numpy(v)
    except TypeError:
        return v


def to_numpy(v):
    try:
        return v.cpu().numpy()
    except AttributeError:
        return v


def return_input(x):
    return x


def to_dtype(x, tensor=None, dtype=None):
    """Cast ``x`` to ``dtype`` (or ``tensor``'s dtype); a no-op under autocast."""
    if torch.is_autocast_enabled():
        return x
    dt = dtype if dtype is not None else tensor.dtype
    if x.dtype != dt:
        x = x.type(dt)
    return x


def to_device(x, tensor=None, device=None, dtype=None):
    dv = device if device is not None else tensor.device
    if x.device != dv:
        x = x.to(dv)
    if dtype is not None:
        x = to_dtype(x, dtype=dtype)
    return x


def torch_arange_from_size(input, size_dim=0):
    return torch.arange(input.size(size_dim), device=input.device)


def torch_all_from_dim_to_end(x, dim):
    return torch.all(x.view(*x.shape[:dim], -1), dim=-1)


def torch_standard_scaler(x):
    return (x - x.mean(0)) / x.std(0)


def use_cuda_if_available():
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# labels


def get_hierarchy_label(batch_labels, hierarchy_level):
    """Select the column(s) ``hierarchy_level`` of 2-D labels; "all" keeps every column."""
    if hierarchy_level == "all":
        return batch_labels
    highest = max(hierarchy_level) if is_list_or_tuple(hierarchy_level) else hierarchy_level
    if highest > 0 and (batch_labels.ndim != 2 or batch_labels.shape[1] <= highest):
        raise ArgumentError(
            f"hierarchy_level={hierarchy_level} needs 2-D labels with more than {highest} "
            f"columns, got labels of shape {tuple(batch_labels.shape)}"
        )
    if batch_labels.ndim == 2:
        return batch_labels[:, hierarchy_level]
    return batch_labels


def map_labels(label_map, labels):
    if is_list_or_tuple(labels):
        labels = np.stack([to_numpy(x) for x in labels], axis=1)
    else:
        labels = to_numpy(labels)
    if labels.ndim == 2:
        mapped = np.zeros(labels.shape, dtype=int)
        for h in range(labels.shape[1]):
            mapped[:, h] = label_map(labels[:, h], h)
        return mapped
    return label_map(labels, 0)


def process_label(labels, hierarchy_level, label_map):
    return numpy_to_torch(get_hierarchy_label(map_labels(label_map, labels), hierarchy_level))


def get_labels_to_indices(labels):
    """``{label: array of positions}`` for a 1-D label sequence."""
    if torch.is_tensor(labels):
        labels = labels.cpu().numpy()
    labels_to_indices = collections.defaultdict(list)
    for i, label in enumerate(labels):
        labels_to_indices[label].append(i)
    for k, v in labels_to_indices.items():
        labels_to_indices[k] = np.array(v, dtype=int)
    return labels_to_indices


def make_label_to_rank_dict(label_set):
    """``{label: 0-based rank in ascending order}``; the labels must be distinct."""
    label_set = list(label_set)
    ordered = sorted(label_set)
    if len(set(ordered)) != len(ordered):
        raise ValueError("label set must not contain duplicates")
    return {label: rank for rank, label in enumerate(ordered)}


def get_label_map(labels):
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return {h: make_label_to_rank_dict(np.unique(labels[:, h])) for h in range(labels.shape[1])}
    return {0: make_label_to_rank_dict(np.unique(labels))}


class LabelMapper:
    """Optionally renumbers labels to ``0..C-1`` (per hierarchy level) using the dataset's labels."""

    def __init__(self, set_min_label_to_zero=False, dataset_labels=None):
        self.set_min_label_to_zero = set_min_label_to_zero
        if dataset_labels is not None:
            self.label_map = get_label_map(dataset_labels)

    def map(self, labels, hierarchy_level):
        if not self.set_min_label_to_zero:
            return labels
        level_map = self.label_map[hierarchy_level]
        return np.array([level_map[x] for x in labels], dtype=int)


# ----------------------------------------------------------------------------------------------
# models and indices


def set_requires_grad(model, requires_grad):
    for param in model.parameters():
        param.requires_grad = requires_grad


def shift_indices_tuple(indices_tuple, batch_size):
    """Add ``batch_size`` to the reference-side indices (p, n) of a miner tuple."""
    if len(indices_tuple) == 3:
        positions = (1, 2)
    elif len(indices_tuple) == 4:
        positions = (1, 3)
    else:
        return indices_tuple
    return tuple(
        x + batch_size if i in positions and len(x) > 0 else x for i, x in enumerate(indices_tuple)
    )


def safe_random_choice(input_data, size):
    """Draw ``size`` items, without replacement whenever there are enough of them."""
    replace = len(input_data) < size
    return NUMPY_RANDOM.choice(input_data, size=size, replace=replace)


def unslice_by_n(input_tensors):
    """Interleave ``n`` equal-shape tensors row by row: row ``i*n + j`` is ``input_tensors[j][i]``."""
    n = len(input_tensors)
    rows, cols = input_tensors[0].shape[:2]
    out = torch.zeros((rows * n, cols), device=input_tensors[0].device)
    for j, t in enumerate(input_tensors):
        out[j::n] = t
    return out


def set_layers_to_eval(layer_name):
    def set_to_eval(module):
        if layer_name in module.__class__.__name__:
            module.eval()

    return set_to_eval


# ----------------------------------------------------------------------------------------------
# recordable attributes (hyper-parameters and statistics that loggers discover)


def add_to_recordable_attributes(input_obj, name=None, list_of_names=None, is_stat=False):
    if is_stat:
        attr_list_name = "_record_these_stats"
    else:
        attr_list_name = "_record_these"
    if not hasattr(input_obj, attr_list_name):
        setattr(input_obj, attr_list_name, [])
    attr_list = getattr(input_obj, attr_list_name)
    if name is not None:
        if name not in attr_list:
            attr_list.append(name)
        if not hasattr(input_obj, name):
            setattr(input_obj, name, 0)
    if is_list_or_tuple(list_of_names):
        for n in list_of_names:
            add_to_recordable_attributes(input_obj, name=n, is_stat=is_stat)


def reset_stats(input_obj):
    for attr_name in getattr(input_obj, "_record_these_stats", []):
        setattr(input_obj, attr_name, 0)


def list_of_recordable_attributes_list_names():
    return ["_record_these", "_record_these_stats"]


# ----------------------------------------------------------------------------------------------
# argument checks used by losses and miners


def check_shapes(embeddings, labels, multi_hot=False):
    """One label per embedding, 1-D (or, with ``multi_hot``, also 2-D multi-hot rows)."""
    if labels is None:
        return
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            "Number of embeddings must equal number of labels: got embeddings of shape "
            f"{tuple(embeddings.shape)} and labels of shape {tuple(labels.shape)}"
        )
    if labels.ndim != 1 and not (multi_hot and labels.ndim == 2):
        raise ValueError(
            "labels must be a 1D tensor of shape (batch_size,)"
            + (" or 2-D multi-hot (batch_size, num_classes)" if multi_hot else "")
            + f", got shape {tuple(labels.shape)}"
        )


def assert_distance_type(obj, distance_type=None, **kwargs):
    obj_name = obj.__class__.__name__
    if distance_type is not None:
        if is_list_or_tuple(distance_type):
            allowed = tuple(distance_type)
            names = ", ".join(d.__name__ for d in allowed)
            message = f"{obj_name} requires the distance metric to be one of {names}"
        else:
            allowed = distance_type
            message = f"{obj_name} requires the distance metric to be {distance_type.__name__}"
        if not isinstance(obj.distance, allowed):
            raise ArgumentError(f"{message}, got {type(obj.distance).__name__}")
    for k, v in kwargs.items():
        actual = getattr(obj.distance, k)
        if actual != v:
            raise ArgumentError(f"{obj_name} requires distance.{k} to be {v}, got {actual}")


class TorchInitWrapper:
    """Deferred ``torch.nn.init`` call: ``TorchInitWrapper(init_fn, **kw)(tensor)``."""

    def __init__(self, init_func, **kwargs):
        self.init_func = init_func
        self.kwargs = kwargs

    def __call__(self, tensor):
        self.init_func(tensor, **self.kwargs)


def set_ref_emb(embeddings, labels, ref_emb, ref_labels, multi_hot=False):
    """Default the reference set to the query set itself (the same objects: identity matters)."""
    if ref_emb is None:
        ref_emb, ref_labels = embeddings, labels
    elif ref_labels is not None:
        ref_labels = to_device(ref_labels, ref_emb)
    check_shapes(ref_emb, ref_labels, multi_hot)
    return ref_emb, ref_labels


def labels_not_supported(labels, ref_labels):
    if labels is not None or ref_labels is not None:
        raise ValueError("labels and ref_labels are not supported by this loss")


def ref_not_supported(embeddings, labels, ref_emb, ref_labels):
    if ref_emb is not embeddings or ref_labels is not labels:
        raise ValueError("ref_emb and ref_labels are not supported by this loss")


def indices_tuple_not_supported(indices_tuple):
    if indices_tuple is not None:
        raise ValueError("indices_tuple is not supported by this loss")


def labels_required(labels):
    if labels is None:
        raise MissingInputError("labels are required for this loss")


def labels_or_indices_tuple_required(labels, indices_tuple):
    if labels is None and indices_tuple is None:
        raise MissingInputError("labels or indices_tuple must be provided")


def concatenate_indices_tuples(it1, it2):
    return tuple(torch.cat([x, to_device(y, x)], dim=0) for x, y in zip(it1, it2))


def exclude(it, targets):
    return [x for x in it if x not in targets]


def append_map(it, suf):
    return [x + suf for x in it]


def _urlretrieve(url, filename, chunk_size=32768):
    raise RuntimeError(
        f"deepmetric does not provide the reference's private helper _urlretrieve (requested URL: "
        f"{url}): the built-in datasets download with download=True; a custom dataset's "
        "download_and_remove must fetch its files itself"
    )


# ----------------------------------------------------------------------------------------------
# the reference's training helpers, at their new homes (imported on first use)

_MOVED = {
    "deepmetric.training.saved_models": (
        "modelpath_creator",
        "save_model",
        "load_model",
        "operate_on_dict_of_models",
        "save_dict_of_models",
        "load_dict_of_models",
        "delete_dict_of_models",
        "regex_wrapper",
        "regex_replace",
        "latest_version",
    ),
    "deepmetric.training.dataloaders": ("get_train_dataloader", "get_eval_dataloader", "EmbeddingDataset"),
    "deepmetric.training.record_keeper": ("sqlite_obj_to_dict",),
}
_HOME = {name: module for module, names in _MOVED.items() for name in names}


def __getattr__(name):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__():
    return sorted(set(globals()) | set(_HOME))
