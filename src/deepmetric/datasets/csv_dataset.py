"""Images listed in a CSV file of ``path,label`` rows, one label or several per row."""

import csv
import os

import torch

from .image_folder import load_image_item


class CSVDataset(torch.utils.data.Dataset):
    """Rows ``path,label`` (a header row ``path,label`` is allowed); relative paths are resolved
    against ``root`` (default: the CSV file's folder). Labels must be integers.

    Multi-label data: with ``label_separator`` set (e.g. ``"|"``), a label cell holds one or more
    non-negative integers (``3|7``), and each item's label is a multi-hot row of ``num_classes``
    entries: ``labels[i, c] = 1`` when item ``i`` has class ``c``. ``labels`` is then an
    ``(N, num_classes)`` int64 tensor and ``label_sets[i]`` the sorted classes of item ``i``. Two
    items are a positive pair when they share a class (what the losses and miners do with 2-D
    multi-hot labels).

    Args:
        csv_path: the CSV file.
        root: folder that relative paths start from.
        transform: applied to each PIL image.
        target_transform: applied to each label (an int, or a multi-hot row).
        label_separator: None (default) for one integer label per row; a string to split a label
            cell into several labels.
        num_classes: width of the multi-hot rows (default: the largest label + 1); only with
            ``label_separator``.
    """

    def __init__(
        self,
        csv_path,
        root=None,
        transform=None,
        target_transform=None,
        label_separator=None,
        num_classes=None,
    ):
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(f"CSVDataset: file {csv_path!r} does not exist")
        if label_separator is not None and (not isinstance(label_separator, str) or not label_separator):
            raise ValueError(
                f"CSVDataset: label_separator must be a non-empty string or None, got {label_separator!r}"
            )
        if num_classes is not None:
            if label_separator is None:
                raise ValueError("CSVDataset: num_classes is only for multi-label data (set label_separator)")
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"CSVDataset: num_classes must be a positive integer, got {num_classes!r}")
        self.root = os.path.dirname(os.path.abspath(csv_path)) if root is None else root
        self.transform = transform
        self.target_transform = target_transform
        self.label_separator = label_separator
        self.paths, labels = [], []
        with open(csv_path, newline="") as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if not row or (line_number == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
                    continue
                if len(row) != 2:
                    raise ValueError(
                        f"CSVDataset: {csv_path}:{line_number} must have 2 columns (path,label), "
                        f"got {len(row)}"
                    )
                path, cell = row[0].strip(), row[1].strip()
                where = f"CSVDataset: {csv_path}:{line_number}"
                labels.append(_int_label(cell, where) if label_separator is None else
                              _label_set(cell, label_separator, where))
                self.paths.append(path if os.path.isabs(path) else os.path.join(self.root, path))
        if label_separator is None:
            self.labels = labels
            self.label_sets = None
            self.num_classes = None
            return
        largest = max((max(s) for s in labels), default=-1)
        if num_classes is not None and largest >= num_classes:
            raise ValueError(
                f"CSVDataset: {csv_path} has label {largest}, not below num_classes={num_classes}"
            )
        self.num_classes = largest + 1 if num_classes is None else num_classes
        self.label_sets = labels
        self.labels = torch.zeros(len(labels), max(self.num_classes, 1), dtype=torch.int64)
        for i, classes in enumerate(labels):
            self.labels[i, list(classes)] = 1

    @property
    def multi_label(self):
        """True when each item's label is a multi-hot row."""
        return self.label_separator is not None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        return load_image_item(self.paths[idx], self.labels[idx], self.transform, self.target_transform)


def _int_label(cell, where):
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"{where} label must be an integer, got {cell!r}") from None


def _label_set(cell, separator, where):
    """The sorted distinct classes of a multi-label cell such as ``"3|7"``."""
    parts = [p.strip() for p in cell.split(separator)]
    if not cell or any(not p for p in parts):
        raise ValueError(f"{where} labels must be integers separated by {separator!r}, got {cell!r}")
    classes = sorted({_int_label(p, where) for p in parts})
    if classes[0] < 0:
        raise ValueError(f"{where} labels must be non-negative, got {cell!r}")
    return tuple(classes)
