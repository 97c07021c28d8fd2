"""Stanford Cars (Krause et al., 2013): 196 classes, 16,185 images, class-folder layout."""

import csv
import os

from ._download import Archive
from .base_dataset import ArchiveDataset

_LAYOUT = """\
  names.csv         one class name per line; line i (1-based) is class i
  anno_train.csv    no header; rows "<file>,<x1>,<y1>,<x2>,<y2>,<class 1..196>"
  anno_test.csv     same format
  car_data/car_data/train/<class name with "/" replaced by "-">/<file>
  car_data/car_data/test/<class name with "/" replaced by "-">/<file>"""


class Cars196(ArchiveDataset):
    """Splits by class: ``train`` classes 1-98, ``test`` 99-196; labels are the class numbers.

    ``download=True`` fetches the class-folder copy published on Kaggle (a zip). No checksum is
    published for it: the zip's own CRC-32 of every member is checked while extracting."""

    DOWNLOAD_URL = (
        "https://www.kaggle.com/api/v1/datasets/download/jutrera/stanford-car-dataset-by-classes-folder"
    )
    DOWNLOAD_MD5 = None

    _CLASSES = {"train": range(1, 99), "test": range(99, 197), "train+test": range(1, 197)}

    def archives(self):
        name = "stanford-car-dataset-by-classes-folder.zip"
        return [Archive(self.DOWNLOAD_URL, name, md5=self.DOWNLOAD_MD5)]

    def expected_layout(self):
        return _LAYOUT

    def generate_split(self):
        with open(self.require_file(os.path.join(self.root, "names.csv"))) as f:
            names = [line.strip().replace("/", "-") for line in f if line.strip()]
        keep = set(self._CLASSES[self.split])
        for folder in ("train", "test"):
            anno = self.require_file(os.path.join(self.root, f"anno_{folder}.csv"))
            with open(anno, newline="") as f:
                for row in csv.reader(f):
                    if not row:
                        continue
                    file_name, class_id = row[0], int(row[-1])
                    if class_id not in keep:
                        continue
                    class_dir = names[class_id - 1]
                    self.paths.append(
                        os.path.join(self.root, "car_data", "car_data", folder, class_dir, file_name)
                    )
                    self.labels.append(class_id)
