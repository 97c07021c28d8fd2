"""The data of a run: what the model trains on, what picks the epoch, and what it is judged on.

A dataset gives a ``train`` and a ``test`` split. When their classes are disjoint (Glyphs, Digits
by default, CUB, Cars196, SOP, iNaturalist), ``test`` is the **zero-shot** section: classes the
model never saw. From every training class a seeded share of the items is set aside:
``validation_fraction`` for model selection and early stopping (never a test class), and
``held_out_fraction`` for the **held-out** section (seen classes, unseen items). When the test
split shares classes with the training split (Digits with ``protocol: held_out_samples``, folder
datasets), it is the held-out section itself and there is no zero-shot section.

Multi-label data (``CSVDataset`` with ``label_separator``): each item's label is a multi-hot row
and two items match when they share a class, in training (the losses and miners take the 2-D
labels) and in evaluation (``shares_a_label`` decides relevance). Validation and held-out items
are set aside per item's first (smallest) class; classes keep their numbers (no remapping).
"""

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .components import DATASETS, FOLDER_DATASETS, argument_at_fault, check_arguments, lookup, strip_prefix
from .config import ConfigError, component, one_line


class ImageToTensor:
    """A plain-callable transform: RGB PIL image -> ``(3, size, size)`` float tensor, normalised
    per channel to zero mean and unit variance under ImageNet statistics."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, size=64):
        self.size = size

    def __call__(self, img):
        img = img.convert("RGB").resize((self.size, self.size))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.MEAN).view(3, 1, 1)
        std = torch.tensor(self.STD).view(3, 1, 1)
        return (x - mean) / std


class DigitImage:
    """A digit's 64 pixel values as a ``(1, 8, 8)`` image (a picklable transform)."""

    def __call__(self, x):
        return x.reshape(1, 8, 8)


# Metrics that cluster the embeddings against one class per item; multi-label data has none.
CLUSTERING_METRICS = ("NMI", "AMI")


def shares_a_label(labels_a, labels_b):
    """Relevance for multi-hot labels: True where two rows share a class.

    ``(..., C)`` rows broadcast against each other and the last axis is reduced: for a query's
    ``(1, C)`` row and its neighbours' ``(k, C)`` rows, a ``(k,)`` bool tensor (the form
    ``AccuracyCalculator(label_comparison_fn=...)`` calls it in)."""
    return ((labels_a != 0) & (labels_b != 0)).any(dim=-1)


def first_class(labels):
    """One class per item: the labels themselves, or each multi-hot row's first class (for a
    plot's colours and for setting items aside per class)."""
    labels = np.asarray(labels)
    return labels.argmax(axis=1) if labels.ndim == 2 else labels


class Items(torch.utils.data.Dataset):
    """Items ``indices`` of ``dataset``, labels passed through ``label_map`` when given."""

    def __init__(self, dataset, indices, labels, label_map=None):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.label_map = label_map
        labels = np.asarray(labels)[self.indices]
        self.labels = np.asarray([label_map[int(x)] for x in labels]) if label_map else labels

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, idx):
        x, label = self.dataset[int(self.indices[idx])]
        return x, (self.label_map[int(label)] if self.label_map else label)


@dataclass
class RunData:
    name: str
    train: Items  # labels remapped to 0..C-1
    validation: Items | None  # original labels
    sections: dict  # "zero_shot" / "held_out" -> Items with original labels
    num_classes: int
    input_shape: tuple
    class_names: dict = field(default_factory=dict)
    train_super_labels: np.ndarray | None = None
    query_kind: str = "image"  # how `search` reads a query file: "digits", "glyphs" or "image"
    image_size: int = 64
    multi_label: bool = False  # labels are multi-hot rows; a match shares a class

    @property
    def train_labels(self):
        return self.train.labels

    def raw_inputs(self, section):
        """A section's inputs flattened to vectors: the no-training baseline embeds with these."""
        items = self.sections[section]
        return torch.stack([items[i][0].flatten() for i in range(len(items))]).float()

    def class_name(self, label):
        """A class's name; for a multi-hot row, its classes' names joined by ``|``."""
        if np.ndim(label) == 1:
            return "|".join(self.class_name(c) for c in np.flatnonzero(np.asarray(label)))
        return self.class_names.get(int(label), str(int(label)))

    def image(self, section, i):
        """What a gallery shows for item ``i`` of ``section`` (an array for imshow)."""
        x = self.sections[section][i][0]
        if x.dim() == 3 and x.shape[0] == 1:
            return x[0].numpy()
        mean = torch.tensor(ImageToTensor.MEAN).view(3, 1, 1)
        std = torch.tensor(ImageToTensor.STD).view(3, 1, 1)
        return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def build_data(config):
    """The run's datasets, split as the module docstring says."""
    from .. import datasets

    name, args, _ = component(config, "dataset")
    cls = lookup("dataset", name, list(DATASETS), datasets)
    args = dict(args)
    evaluation = config["evaluation"]
    query_kind, image_size, class_names, transform = "image", 64, {}, None
    if name in ("Glyphs", "Digits"):
        args = check_arguments("dataset", cls, args, ("split", "transform"))
        if name == "Digits":
            args["transform"] = DigitImage()
            query_kind, image_size = "digits", 8
        train, test = _make(cls, "train", args), _make(cls, "test", args)
        if name == "Glyphs":
            query_kind, image_size = "glyphs", int(train.data.shape[-1])
            class_names = dict(enumerate(train.characters))
    else:
        image_size = args.pop("image_size", 64)
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
            raise ConfigError(
                "dataset.args.image_size", f"must be an integer of at least 8, got {image_size!r}"
            )
        transform = ImageToTensor(image_size)
        if name in FOLDER_DATASETS:
            train_args, test_args = _folder_split_args(args)
            train = _make(cls, None, {**train_args, "transform": transform}, "train")
            test = _make(cls, None, {**test_args, "transform": transform}, "test")
        else:
            train = _make(cls, "train", {**args, "transform": transform})
            test = _make(cls, "test", {**args, "transform": transform})
        if hasattr(train, "classes"):
            class_names = dict(enumerate(train.classes))
    train_labels = _labels(train)
    test_labels = _labels(test)
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise ConfigError(
            "dataset", f"{name}: the {'train' if len(train_labels) == 0 else 'test'} split is empty"
        )
    multi_label = train_labels.ndim == 2 or test_labels.ndim == 2
    if multi_label:
        train, test, train_labels, test_labels = _same_width(cls, args, train, test, transform)
        _check_multi_label_metrics(evaluation["metrics"])
    disjoint = not set(_classes(train_labels)) & set(_classes(test_labels))
    held_out_fraction = evaluation["held_out_fraction"] if disjoint else 0.0
    fit, validation, held_out = carve(
        first_class(train_labels), evaluation["validation_fraction"], held_out_fraction, config["seed"]
    )
    if len(fit) == 0:
        raise ConfigError("evaluation.validation_fraction", "leaves no training items; lower it")
    if multi_label:  # the multi-hot columns are the classes: no remapping
        label_map, num_classes = None, train_labels.shape[1]
    else:
        label_map = {int(c): i for i, c in enumerate(np.unique(train_labels[fit]))}
        num_classes = len(label_map)
    sections = {}
    if disjoint and evaluation["zero_shot"]:
        sections["zero_shot"] = Items(test, np.arange(len(test_labels)), test_labels)
    if not disjoint:
        sections["held_out"] = Items(test, np.arange(len(test_labels)), test_labels)
    elif len(held_out):
        sections["held_out"] = Items(train, held_out, train_labels)
    if not sections:
        raise ConfigError(
            "evaluation", "leaves nothing to evaluate: enable zero_shot or set held_out_fraction above 0"
        )
    train_items = Items(train, fit, train_labels, label_map)
    super_labels = getattr(train, "super_labels", None)
    if super_labels is not None:
        super_labels = np.asarray(super_labels)[fit]
    return RunData(
        name=name,
        train=train_items,
        validation=Items(train, validation, train_labels) if len(validation) else None,
        sections=sections,
        num_classes=num_classes,
        input_shape=tuple(train_items[0][0].shape),
        class_names=class_names,
        train_super_labels=super_labels,
        query_kind=query_kind,
        image_size=image_size,
        multi_label=multi_label,
    )


def _classes(labels):
    """The classes that occur: the distinct labels, or the multi-hot columns with an item."""
    return np.flatnonzero(labels.any(axis=0)) if labels.ndim == 2 else np.unique(labels)


def _same_width(cls, args, train, test, transform):
    """Multi-label train and test splits with multi-hot rows of one width (the wider one's)."""
    train_labels, test_labels = _labels(train), _labels(test)
    if train_labels.ndim != 2 or test_labels.ndim != 2:
        raise ConfigError(
            "dataset.args",
            "the train and test splits must both be multi-label (label_separator in both) or both not",
        )
    width = max(train_labels.shape[1], test_labels.shape[1])
    train_args, test_args = _folder_split_args(args)
    if train_labels.shape[1] < width:
        train = _make(cls, None, {**train_args, "transform": transform, "num_classes": width}, "train")
    if test_labels.shape[1] < width:
        test = _make(cls, None, {**test_args, "transform": transform, "num_classes": width}, "test")
    return train, test, _labels(train), _labels(test)


def _check_multi_label_metrics(metrics):
    clustering = [m for m in metrics if m in CLUSTERING_METRICS]
    if clustering:
        raise ConfigError(
            "evaluation.metrics",
            f"{', '.join(clustering)} cluster the items by one class each, and this dataset is "
            "multi-label (several classes per item): use retrieval metrics (precision_at_1, "
            "r_precision, mean_average_precision_at_r, ...)",
        )


def carve(labels, validation_fraction, held_out_fraction, seed):
    """``(train, validation, held_out)`` item indices: from every class, seeded shares of its
    items. A class gives a share only when it has at least 2 items for it (one item alone has no
    match to retrieve) and keeps at least one item to train on."""
    rng = np.random.RandomState(seed % 2**32)
    train, validation, held_out = [], [], []
    for c in np.unique(labels):
        items = rng.permutation(np.flatnonzero(labels == c))
        n_val = _share(len(items), validation_fraction)
        n_held = _share(len(items), held_out_fraction)
        if n_val + n_held >= len(items):
            n_val = n_held = 0
        validation.extend(items[:n_val])
        held_out.extend(items[n_val : n_val + n_held])
        train.extend(items[n_val + n_held :])
    return (np.sort(np.asarray(x, dtype=np.int64)) for x in (train, validation, held_out))


def _share(n, fraction):
    k = int(n * fraction)
    return k if k >= 2 else 0


def _labels(dataset):
    labels = dataset.labels
    return labels.numpy() if torch.is_tensor(labels) else np.asarray([int(x) for x in labels])


def _make(cls, split, args, which=None):
    args_key = "dataset.args" if which is None else f"dataset.args.{which}"
    kwargs = args if split is None else {"split": split, **args}
    try:
        return cls(**kwargs)
    except ImportError as err:
        raise ConfigError("dataset.name", f"{cls.__name__}: {one_line(err)}") from None
    except (TypeError, ValueError, FileNotFoundError, AssertionError, KeyError) as err:
        raise ConfigError(argument_at_fault(args_key, err, args), strip_prefix(cls, err)) from None


def _folder_split_args(args):
    if not isinstance(args.get("train"), dict) or not isinstance(args.get("test"), dict):
        raise ConfigError(
            "dataset.args",
            "ImageFolderDataset and CSVDataset need 'train' and 'test' mappings of their arguments "
            "(e.g. train: {root: data/train}, test: {root: data/test})",
        )
    unknown = sorted(set(args) - {"train", "test"})
    if unknown:
        raise ConfigError(f"dataset.args.{unknown[0]}", "unknown key; allowed: image_size, train, test")
    return args["train"], args["test"]


# ----------------------------------------------------------------------------------------------
# search queries


def read_queries(data, query):
    """``[(name, input tensor)]`` for one query file, preprocessed as the dataset's own items:
    ``.npy``/``.csv``/``.txt`` hold one item per row (Digits: 64 values, raw 0-16 or scaled to
    0-1; Glyphs: ``image_size``^2 values in 0-1); an image file is read as grey levels (Digits,
    Glyphs) or RGB (image datasets)."""
    if not os.path.isfile(query):
        raise ConfigError(None, f"query {query!r} is neither an item number nor an existing file")
    ext = os.path.splitext(query)[1].lower()
    if ext in (".npy", ".csv", ".txt"):
        return _array_queries(data, query, ext)
    return [(query, _image_query(data, query))]


def _array_queries(data, query, ext):
    if data.query_kind == "image":
        raise ConfigError(
            None, f"query {query!r}: {data.name} takes image files as queries, not {ext} arrays"
        )
    try:
        if ext == ".npy":
            values = np.load(query, allow_pickle=False)
        else:
            values = np.loadtxt(query, delimiter="," if ext == ".csv" else None, dtype=np.float64, ndmin=2)
    except (ValueError, OSError, EOFError) as err:
        raise ConfigError(None, f"query file {query!r} cannot be read as numbers: {one_line(err)}") from None
    values = np.asarray(values, dtype=np.float64)
    size = data.image_size**2
    if values.size == 0 or values.size % size:
        raise ConfigError(
            None,
            f"query file {query!r} must hold {size} values per item ({data.image_size}x"
            f"{data.image_size} pixels), got {values.size} values",
        )
    if not np.isfinite(values).all():
        raise ConfigError(None, f"query file {query!r} holds NaN or infinite values")
    rows = values.reshape(-1, size)
    top = 16.0 if data.query_kind == "digits" else 255.0
    if rows.min() < 0 or rows.max() > top:
        raise ConfigError(None, f"query file {query!r}: pixel values must lie in [0, 1] or [0, {top:g}]")
    if rows.max() > 1:
        print(
            f"note: {query}: values above 1 read as 0-{top:g} pixel levels and divided by {top:g}, "
            f"as {data.name} scales its items"
        )
        rows = rows / top
    tensors = [
        torch.from_numpy(r.astype(np.float32)).reshape(1, data.image_size, data.image_size) for r in rows
    ]
    if len(tensors) == 1:
        return [(query, tensors[0])]
    return [(f"{query}[{i}]", t) for i, t in enumerate(tensors)]


def _image_query(data, query):
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(
            None, "reading image queries needs Pillow: pip install 'deepmetric[images]'"
        ) from None
    try:
        with Image.open(query) as img:
            img.load()
            if data.query_kind == "image":
                return ImageToTensor(data.image_size)(img)
            grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except OSError as err:
        raise ConfigError(None, f"query {query!r} is not a readable image: {one_line(err)}") from None
    if grey.mean() > 0.5:  # dark ink on light paper: the items are light ink on black
        grey = 1.0 - grey
    x = torch.from_numpy(grey)[None, None]
    x = torch.nn.functional.interpolate(x, size=(data.image_size, data.image_size), mode="area")[0]
    return x / max(float(x.max()), 1e-6) if data.query_kind == "digits" else x
