"""Stanford Online Products (Oh Song et al., CVPR 2016): 22,634 classes, 120,053 images."""

import os

from .base_dataset import LocalOnlyDataset

_LAYOUT = """\
  Stanford_Online_Products/Ebay_train.txt   header line, then "image_id class_id super_class_id path"
  Stanford_Online_Products/Ebay_test.txt
  Stanford_Online_Products/<path>           e.g. bicycle_final/<name>.JPG"""


class StanfordOnlineProducts(LocalOnlyDataset):
    """``train`` and ``test`` are the official files; labels are the class ids."""

    def expected_layout(self):
        return _LAYOUT

    def generate_split(self):
        base = os.path.join(self.root, "Stanford_Online_Products")
        parts = ["train", "test"] if self.split == "train+test" else [self.split]
        for part in parts:
            with open(self.require_file(os.path.join(base, f"Ebay_{part}.txt"))) as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split()
                    if len(fields) < 4:
                        continue
                    self.paths.append(os.path.join(base, fields[3]))
                    self.labels.append(int(fields[1]))
