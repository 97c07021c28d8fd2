"""Images listed in a CSV file of ``path,label`` rows."""

import csv
import os

import torch

from .image_folder import load_image_item


class CSVDataset(torch.utils.data.Dataset):
    """Rows ``path,label`` (a header row ``path,label`` is allowed); relative paths are resolved
    against ``root`` (default: the CSV file's folder). Labels must be integers.

    Args:
        csv_path: the CSV file.
        root: folder that relative paths start from.
        transform: applied to each PIL image.
        target_transform: applied to each integer label.
    """

    def __init__(self, csv_path, root=None, transform=None, target_transform=None):
        if not os.path.isfile(csv_path):
            raise FileNotFoundError(f"CSVDataset: file {csv_path!r} does not exist")
        self.root = os.path.dirname(os.path.abspath(csv_path)) if root is None else root
        self.transform = transform
        self.target_transform = target_transform
        self.paths, self.labels = [], []
        with open(csv_path, newline="") as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if not row or (line_number == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
                    continue
                if len(row) != 2:
                    raise ValueError(
                        f"CSVDataset: {csv_path}:{line_number} must have 2 columns (path,label), "
                        f"got {len(row)}"
                    )
                path, label = row[0].strip(), row[1].strip()
                try:
                    label = int(label)
                except ValueError:
                    raise ValueError(
                        f"CSVDataset: {csv_path}:{line_number} label must be an integer, got {label!r}"
                    ) from None
                self.paths.append(path if os.path.isabs(path) else os.path.join(self.root, path))
                self.labels.append(label)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        return load_image_item(self.paths[idx], self.labels[idx], self.transform, self.target_transform)
