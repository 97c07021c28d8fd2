"""iNaturalist 2018 with the retrieval splits of Brown et al. ("Smooth-AP", ECCV 2020)."""

import json
import os

from .base_dataset import LocalOnlyDataset

_LAYOUT = """\
  train2018.json, val2018.json     COCO-style: "images" [{file_name, id}],
                                   "annotations" [{image_id, category_id}]
  Inat_dataset_splits/Inaturalist_train_set1.txt   one relative image path per line
  Inat_dataset_splits/Inaturalist_test_set1.txt
  <file_name>                      e.g. train_val2018/<supercategory>/<category_id>/<hash>.jpg"""


class INaturalist2018(LocalOnlyDataset):
    """Each split file lists image paths; labels are the images' category ids."""

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
