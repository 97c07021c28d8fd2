"""Base class of the image-retrieval datasets, loaded from local folders only.

deepmetric never downloads anything. The built-in datasets describe the folder layout they
expect when it is missing; a user subclass may implement ``download_and_remove`` to fetch data
its own way.
"""

import os
from abc import ABC, abstractmethod

import torch


class BaseDataset(ABC, torch.utils.data.Dataset):
    """``(image, label)`` pairs listed by ``generate_split()`` into ``self.paths``/``self.labels``.

    Args:
        root: the dataset folder.
        split: one of ``get_available_splits()`` (``"train"``, ``"test"``, ``"train+test"``).
        transform: applied to the PIL image.
        target_transform: applied to the integer label.
        download: for user subclasses, call ``download_and_remove()`` when ``root`` is missing or
            empty. The built-in datasets raise instead (no network access, ever).
    """

    def __init__(self, root, split="train+test", transform=None, target_transform=None, download=False):
        self.root = root
        if download and _is_missing_or_empty(root):
            if not self.can_download():
                raise ValueError(self.missing_data_message())
            os.makedirs(root, exist_ok=True)
            self.download_and_remove()
        elif not os.path.isdir(root):
            raise ValueError(self.missing_data_message())
        if split not in self.get_available_splits():
            raise ValueError(
                f"split {split!r} is not supported; supported splits: {self.get_available_splits()}"
            )
        self.split = split
        self.transform = transform
        self.target_transform = target_transform
        self.paths = []
        self.labels = []
        self.generate_split()

    @abstractmethod
    def generate_split(self):
        """Fill ``self.paths`` and ``self.labels`` for ``self.split``."""

    @abstractmethod
    def download_and_remove(self):
        """Fetch the data into ``self.root`` (user subclasses only)."""

    def get_available_splits(self):
        return ["train", "test", "train+test"]

    def can_download(self):
        """Built-in datasets return False: they only read local files."""
        return True

    def expected_layout(self):
        """A description of the files expected under ``root`` (for error messages)."""
        return ""

    def missing_data_message(self):
        message = (
            f"{type(self).__name__}: root {self.root!r} is not a folder with the dataset, and "
            "deepmetric never downloads data. Place the files there yourself."
        )
        layout = self.expected_layout()
        return f"{message} Expected layout under root:\n{layout}" if layout else message

    def require_file(self, path):
        """``path``, or a ``FileNotFoundError`` naming it and the expected layout."""
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{type(self).__name__}: expected file {path!r} is missing. "
                f"Expected layout under root:\n{self.expected_layout()}"
            )
        return path

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        from PIL import Image  # only image datasets need Pillow

        img = Image.open(self.paths[idx])
        label = self.labels[idx]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label


class LocalOnlyDataset(BaseDataset):
    """A built-in dataset: reads local files, never downloads."""

    def can_download(self):
        return False

    def download_and_remove(self):
        raise ValueError(self.missing_data_message())


def _is_missing_or_empty(root):
    return not os.path.isdir(root) or len(os.listdir(root)) == 0
