"""Datasets: local-folder loaders for the standard retrieval benchmarks (never downloaded), the
embedded handwritten digits and the embedded glyphs (characters drawn from matplotlib's fonts)."""

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
    "BaseDataset",
    "CSVDataset",
    "CUB",
    "Cars196",
    "Digits",
    "Glyphs",
    "ImageFolderDataset",
    "INaturalist2018",
    "StanfordOnlineProducts",
]
