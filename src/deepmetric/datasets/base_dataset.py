"""Base class of the image-retrieval datasets.

``download=True`` on a missing or empty ``root`` calls ``download_and_remove()``: the built-in
datasets fetch the reference's archives (same URLs), verify their published checksums where
there are any, extract them and delete them (see ``_download``). Otherwise the files are read
from ``root`` as they are.
"""

import os
from abc import ABC, abstractmethod

import torch

from ._download import WORK_DIR, download_and_extract, has_unfinished_download


class BaseDataset(ABC, torch.utils.data.Dataset):
    """``(image, label)`` pairs listed by ``generate_split()`` into ``self.paths``/``self.labels``.

    Args:
        root: the dataset folder.
        split: one of ``get_available_splits()`` (``"train"``, ``"test"``, ``"train+test"``).
        transform: applied to the PIL image.
        target_transform: applied to the integer label.
        download: call ``download_and_remove()`` when ``root`` is missing or empty (or holds an
            unfinished download, which is then finished). An existing dataset is never
            downloaded again.
    """

    def __init__(self, root, split="train+test", transform=None, target_transform=None, download=False):
        self.root = root
        if split not in self.get_available_splits():  # before any download, not after it
            raise ValueError(
                f"split {split!r} is not supported; supported splits: {self.get_available_splits()}"
            )
        if download and _needs_download(root):
            os.makedirs(root, exist_ok=True)
            self.download_and_remove()
        elif not os.path.isdir(root):
            raise ValueError(self.missing_data_message())
        elif has_unfinished_download(root):
            raise ValueError(
                f"{type(self).__name__}: root {root!r} holds an unfinished download (folder "
                f"{WORK_DIR!r}); pass download=True to finish it, or delete that folder"
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
        """Fetch the data into ``self.root`` (called with ``download=True``)."""

    def get_available_splits(self):
        return ["train", "test", "train+test"]

    def expected_layout(self):
        """A description of the files expected under ``root`` (for error messages)."""
        return ""

    def missing_data_message(self):
        message = (
            f"{type(self).__name__}: root {self.root!r} does not exist; pass download=True to "
            "download the dataset there, or point root at a folder that holds it."
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


class ArchiveDataset(BaseDataset):
    """A built-in dataset: ``download_and_remove()`` fetches, verifies and extracts the archives
    listed by ``archives()`` into ``root``."""

    @abstractmethod
    def archives(self):
        """The :class:`~deepmetric.datasets._download.Archive` files that make up the dataset."""

    def download_and_remove(self):
        download_and_extract(self.root, self.archives())


def _needs_download(root):
    return not os.path.isdir(root) or len(os.listdir(root)) == 0 or has_unfinished_download(root)
