"""Datasets for the ``deepmetric`` command: train and held-out splits, as tensors or images."""

from dataclasses import dataclass

import numpy as np
import torch

from .components import DATASETS, FOLDER_DATASETS, lookup
from .config import ConfigError, component


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


class LabelRemap:
    """Maps original labels to ``0..C-1`` (classification and proxy losses need that)."""

    def __init__(self, labels):
        self.to_index = {label: i for i, label in enumerate(sorted(set(int(x) for x in labels)))}

    def __call__(self, label):
        return self.to_index[int(label)]


@dataclass
class RunData:
    train: torch.utils.data.Dataset
    test: torch.utils.data.Dataset
    train_labels: np.ndarray  # remapped to 0..C-1
    test_labels: np.ndarray  # original labels
    num_classes: int
    input_shape: tuple
    name: str

    def raw_test_inputs(self):
        """Held-out inputs flattened to vectors: the no-training baseline embeds with these."""
        return torch.stack([self.test[i][0].flatten() for i in range(len(self.test))])

    def test_image(self, i):
        """What the retrieval gallery shows for held-out item ``i`` (an array for imshow)."""
        x = self.test[i][0]
        if self.name == "Digits":
            return x.reshape(8, 8).numpy()
        mean = torch.tensor(ImageToTensor.MEAN).view(3, 1, 1)
        std = torch.tensor(ImageToTensor.STD).view(3, 1, 1)
        return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def build_data(config, zero_shot=False):
    """Train and held-out datasets; ``zero_shot`` trains on digits 0-4 and tests on 5-9."""
    from .. import datasets

    name, args, _ = component(config, "dataset")
    cls = lookup("dataset", name, list(DATASETS), datasets)
    args = dict(args)
    if name == "Digits":
        if zero_shot:
            args = {**args, "protocol": "held_out_classes"}
        train, test = _make(cls, "train", args), _make(cls, "test", args)
    else:
        image_size = args.pop("image_size", 64)
        transform = ImageToTensor(image_size)
        if name in FOLDER_DATASETS:
            train_args, test_args = _folder_split_args(args)
            train = _make(cls, None, {**train_args, "transform": transform})
            test = _make(cls, None, {**test_args, "transform": transform})
        else:
            train = _make(cls, "train", {**args, "transform": transform})
            test = _make(cls, "test", {**args, "transform": transform})
    train_labels_orig = np.asarray([int(x) for x in train.labels])
    remap = LabelRemap(train_labels_orig)
    train = RemappedDataset(train, remap)
    input_shape = tuple(train[0][0].shape)
    return RunData(
        train=train,
        test=test,
        train_labels=np.asarray([remap(x) for x in train_labels_orig]),
        test_labels=np.asarray([int(x) for x in test.labels]),
        num_classes=len(remap.to_index),
        input_shape=input_shape,
        name=name,
    )


class RemappedDataset(torch.utils.data.Dataset):
    def __init__(self, dataset, remap):
        self.dataset = dataset
        self.remap = remap
        self.labels = [remap(x) for x in dataset.labels]

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        x, label = self.dataset[idx]
        return x, self.remap(label)


def _make(cls, split, args):
    try:
        return cls(**args) if split is None else cls(split=split, **args)
    except TypeError as err:
        raise ConfigError("dataset.args", f"{cls.__name__}: {' '.join(str(err).split())}") from None
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError("dataset.args", f"{cls.__name__}: {' '.join(str(err).split())}") from None


def _folder_split_args(args):
    if not isinstance(args.get("train"), dict) or not isinstance(args.get("test"), dict):
        raise ConfigError(
            "dataset.args",
            "ImageFolderDataset and CSVDataset need 'train' and 'test' mappings of their arguments "
            "(e.g. train: {root: data/train}, test: {root: data/test})",
        )
    return args["train"], args["test"]
