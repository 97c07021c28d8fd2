"""Base of the modules that own a distance: miners, and (with a reducer) losses and regularizers."""

from ..utils.module_with_records import ModuleWithRecords
from .lp_distance import LpDistance


class ModuleWithRecordsAndDistance(ModuleWithRecords):
    """Owns ``self.distance`` (``get_default_distance()`` when none is given)."""

    def __init__(self, distance=None, **kwargs):
        super().__init__(**kwargs)
        self.distance = self.get_default_distance() if distance is None else distance

    def get_default_distance(self):
        return LpDistance(p=2)
