"""CUB-200-2011 birds (Wah et al., 2011): 200 classes, 11,788 images."""

import os

from ._download import Archive
from .base_dataset import ArchiveDataset

_LAYOUT = """\
  CUB_200_2011/images.txt               "<image_id> <relative/path.jpg>" per line
  CUB_200_2011/image_class_labels.txt   "<image_id> <class_id 1..200>" per line, same order
  CUB_200_2011/images/<relative/path.jpg>"""


class CUB(ArchiveDataset):
    """Splits by class: ``train`` classes 1-100, ``test`` 101-200; labels are the class ids.

    ``download=True`` fetches ``CUB_200_2011.tgz`` from CaltechDATA and checks its
    published MD5."""

    DOWNLOAD_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    DOWNLOAD_MD5 = "97eceeb196236b17998738112f37df78"

    _CLASSES = {"train": range(1, 101), "test": range(101, 201), "train+test": range(1, 201)}

    def archives(self):
        return [Archive(self.DOWNLOAD_URL, "CUB_200_2011.tgz", md5=self.DOWNLOAD_MD5)]

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
