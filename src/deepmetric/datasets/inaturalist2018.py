"""iNaturalist 2018 with the retrieval splits of Brown et al. ("Smooth-AP", ECCV 2020)."""

import json
import os

from ._download import Archive
from .base_dataset import ArchiveDataset

_LAYOUT = """\
  train2018.json, val2018.json     COCO-style: "images" [{file_name, id}],
                                   "annotations" [{image_id, category_id}]
  Inat_dataset_splits/Inaturalist_train_set1.txt   one relative image path per line
  Inat_dataset_splits/Inaturalist_test_set1.txt
  <file_name>                      e.g. train_val2018/<supercategory>/<category_id>/<hash>.jpg"""


class INaturalist2018(ArchiveDataset):
    """Each split file lists image paths; labels are the images' category ids.

    ``download=True`` fetches the competition's images (``train_val2018.tar.gz``, 120 GB) and
    annotations from its S3 bucket, checking the MD5s the competition publishes, and the split
    files of Brown et al. from Google Drive (no published checksum)."""

    IMG_DOWNLOAD_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train_val2018.tar.gz"
    TRAIN_ANN_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train2018.json.tar.gz"
    VAL_ANN_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/2018/val2018.json.tar.gz"
    SPLITS_URL = "https://drive.google.com/uc?id=1sXfkBTFDrRU3__-NUs1qBP3sf_0uMB98"
    IMG_MD5 = "b1c6952ce38f31868cc50ea72d066cc3"
    TRAIN_ANN_MD5 = "bfa29d89d629cbf04d826a720c0a68b0"
    VAL_ANN_MD5 = "f2ed8bfe3e9901cdefceb4e53cd3775d"
    SPLITS_MD5 = None

    def archives(self):
        return [
            Archive(self.IMG_DOWNLOAD_URL, "train_val2018.tar.gz", md5=self.IMG_MD5),
            Archive(self.TRAIN_ANN_URL, "train2018.json.tar.gz", md5=self.TRAIN_ANN_MD5),
            Archive(self.VAL_ANN_URL, "val2018.json.tar.gz", md5=self.VAL_ANN_MD5),
            Archive(self.SPLITS_URL, "Inat_dataset_splits.zip", md5=self.SPLITS_MD5),
        ]

    def expected_layout(self):
        return _LAYOUT

    def generate_split(self):
        path_to_label = {}
        for name in ("train2018.json", "val2018.json"):
            with open(self.require_file(os.path.join(self.root, name))) as f:
                data = json.load(f)
            id_to_label = {a["image_id"]: a["category_id"] for a in data["annotations"]}
            for image in data["images"]:
                path_to_label[image["file_name"]] = id_to_label[image["id"]]
        parts = ["train", "test"] if self.split == "train+test" else [self.split]
        for part in parts:
            split_file = os.path.join(self.root, "Inat_dataset_splits", f"Inaturalist_{part}_set1.txt")
            with open(self.require_file(split_file)) as f:
                for line in f:
                    rel_path = line.strip()
                    if not rel_path:
                        continue
                    self.paths.append(os.path.join(self.root, rel_path))
                    self.labels.append(path_to_label[rel_path])
