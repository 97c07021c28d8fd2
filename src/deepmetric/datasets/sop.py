"""Stanford Online Products (Oh Song et al., CVPR 2016): 22,634 classes, 120,053 images."""

import os

from ._download import Archive
from .base_dataset import ArchiveDataset

_LAYOUT = """\
  Stanford_Online_Products/Ebay_train.txt   header line, then "image_id class_id super_class_id path"
  Stanford_Online_Products/Ebay_test.txt
  Stanford_Online_Products/<path>           e.g. bicycle_final/<name>.JPG"""


class StanfordOnlineProducts(ArchiveDataset):
    """``train`` and ``test`` are the official files; labels are the class ids.

    ``download=True`` fetches ``Stanford_Online_Products.zip`` from the Google Drive
    copy that the authors link to. The MD5 published for the original Stanford archive is not
    checked, since nobody publishes one for this copy: the zip's own CRC-32 of every member is
    checked while extracting."""

    DOWNLOAD_URL = (
        "https://drive.usercontent.google.com/download?id=1TclrpQOF_ullUP99wk_gjGN8pKvtErG8"
        "&export=download&authuser=0&confirm=t"
    )
    DOWNLOAD_MD5 = None

    def archives(self):
        return [Archive(self.DOWNLOAD_URL, "Stanford_Online_Products.zip", md5=self.DOWNLOAD_MD5)]

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
