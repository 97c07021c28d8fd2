"""The embedded default dataset: scikit-learn's handwritten digits (no download, no files).

1,797 grey-scale 8x8 images of the digits 0-9 (Alpaydin & Kaynak, UCI), shipped inside
scikit-learn. Each item is a float32 vector of 64 pixels scaled to ``[0, 1]``.
"""

import numpy as np
import torch

from .in_memory import InMemoryDataset


class Digits(InMemoryDataset):
    """Digits split for metric learning.

    Args:
        split: ``"train"``, ``"test"`` or ``"train+test"``.
        protocol: ``"held_out_classes"`` (default, the usual metric-learning protocol: train on
            digits ``train_classes``, evaluate retrieval on the other digits) or
            ``"held_out_samples"`` (every digit in both splits, a stratified ``test_fraction`` of
            the images held out).
        train_classes: digits used for training under ``held_out_classes``.
        test_fraction: share of images held out under ``held_out_samples``.
        seed: seeds the ``held_out_samples`` split.
        transform: applied to each 64-d vector.
    """

    PROTOCOLS = ("held_out_classes", "held_out_samples")

    def __init__(
        self,
        split="train",
        protocol="held_out_classes",
        train_classes=(0, 1, 2, 3, 4),
        test_fraction=0.3,
        seed=0,
        transform=None,
    ):
        if split not in ("train", "test", "train+test"):
            raise ValueError(f"split {split!r} is not supported; use 'train', 'test' or 'train+test'")
        if protocol not in self.PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not supported; use one of {self.PROTOCOLS}")
        from sklearn.datasets import load_digits

        digits = load_digits()
        data = digits.data.astype(np.float32) / 16.0
        target = digits.target.astype(np.int64)
        keep = self._split_mask(target, split, protocol, train_classes, test_fraction, seed)
        self.split = split
        self.protocol = protocol
        self.data = torch.from_numpy(data[keep])
        self.labels = torch.from_numpy(target[keep])
        self.transform = transform

    @staticmethod
    def _split_mask(target, split, protocol, train_classes, test_fraction, seed):
        if split == "train+test":
            return np.ones(len(target), dtype=bool)
        if protocol == "held_out_classes":
            in_train = np.isin(target, np.asarray(train_classes))
        else:
            from sklearn.model_selection import train_test_split

            train_idx, _ = train_test_split(
                np.arange(len(target)), test_size=test_fraction, random_state=seed, stratify=target
            )
            in_train = np.zeros(len(target), dtype=bool)
            in_train[train_idx] = True
        return in_train if split == "train" else ~in_train

