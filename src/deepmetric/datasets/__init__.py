"""Datasets: the standard retrieval benchmarks (read from a folder, or downloaded into it with
``download=True``), image folders and CSV lists, the embedded handwritten digits and the embedded
glyphs (characters drawn from matplotlib's fonts)."""

from ._download import ArchiveError, ChecksumError, DownloadError
from .base_dataset import BaseDataset
from .cars196 import Cars196
from .csv_dataset import CSVDataset
from .cub import CUB
from .digits import Digits
from .glyphs import Glyphs
from .image_folder import ImageFolderDataset
from .inaturalist2018 import INaturalist2018
from .sop import StanfordOnlineProducts

__all__ = [
    "ArchiveError",
    "BaseDataset",
    "ChecksumError",
    "DownloadError",
    "CSVDataset",
    "CUB",
    "Cars196",
    "Digits",
    "Glyphs",
    "ImageFolderDataset",
    "INaturalist2018",
    "StanfordOnlineProducts",
]
