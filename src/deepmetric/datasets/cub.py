"""CUB-200-2011 birds (Wah et al., 2011): 200 classes, 11,788 images."""

import os

from .base_dataset import LocalOnlyDataset

_LAYOUT = """\
  CUB_200_2011/images.txt               "<image_id> <relative/path.jpg>" per line
  CUB_200_2011/image_class_labels.txt   "<image_id> <class_id 1..200>" per line, same order
  CUB_200_2011/images/<relative/path.jpg>"""


class CUB(LocalOnlyDataset):
    """Splits by class: ``train`` classes 1-100, ``test`` 101-200; labels are the class ids."""

    _CLASSES = {"train": range(1, 101), "test": range(101, 201), "train+test": range(1, 201)}

    def expected_layout(self):
        return _LAYOUT

    def generate_split(self):
        base = os.path.join(self.root, "CUB_200_2011")
        keep = set(self._CLASSES[self.split])
        with open(self.require_file(os.path.join(base, "images.txt"))) as images, open(
            self.require_file(os.path.join(base, "image_class_labels.txt"))
        ) as classes:
            for image_line, class_line in zip(images, classes):
                if not image_line.strip():
                    continue
                image_id, rel_path = image_line.split()
                class_image_id, class_id = class_line.split()
                if image_id == class_image_id and int(class_id) in keep:
                    self.paths.append(os.path.join(base, "images", rel_path))
                    self.labels.append(int(class_id))
