"""Sparse-centers regularization of SoftTriple (Qian et al., "SoftTriple Loss: Deep Metric Learning
Without Triplet Sampling", ICCV 2019)."""

import torch

from ..distances import CosineSimilarity
from ..reducers import DivisorReducer
from ..utils import common_functions as c_f
from ..utils.errors import ShapeError, require
from .base_regularizer import BaseRegularizer


class SparseCentersRegularizer(BaseRegularizer):
    """Encourages the centers of each class to merge: for every pair of centers of the same class,
    ``reg = sqrt(2 + tiny - min(2 s_ij, 2))``, summed and divided by ``C K (K - 1)``.

    Input rows are laid out as SoftTriple's: class ``c`` owns rows ``c K .. c K + K - 1``.
    """

    def __init__(self, num_classes, centers_per_class, **kwargs):
        super().__init__(**kwargs)
        require(
            centers_per_class > 1,
            f"SparseCentersRegularizer needs centers_per_class > 1, got {centers_per_class}",
        )
        c_f.assert_distance_type(self, CosineSimilarity)
        self._num_rows = num_classes * centers_per_class
        self.set_class_masks(num_classes, centers_per_class)
        # Registered but never assigned, as in the reference: these records read 0.
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "centers_per_class"], is_stat=False
        )
        self.add_to_recordable_attributes(
            list_of_names=["same_class_center_sim", "diff_class_center_sim"], is_stat=True
        )

    def compute_loss(self, weights):
        require(
            weights.shape[0] == self._num_rows,
            f"SparseCentersRegularizer expects {self._num_rows} rows "
            f"(num_classes x centers_per_class), got {weights.shape[0]}",
            ShapeError,
        )
        sims = self.distance(weights)
        same = self.same_class_mask.to(sims.device)
        tiny = c_f.small_val(weights.dtype)
        reg = torch.sqrt(2.0 + tiny - torch.clamp(2.0 * sims[same], max=2))
        divisor = 2 * torch.sum(self.same_class_mask)
        self.set_stats(sims)
        return {
            "loss": {
                "losses": reg,
                "indices": c_f.torch_arange_from_size(reg),
                "reduction_type": "element",
                "divisor": divisor,
            }
        }

    def set_class_masks(self, num_classes, centers_per_class):
        total = num_classes * centers_per_class
        block_of = torch.arange(total) // centers_per_class
        same_block = block_of.unsqueeze(1) == block_of.unsqueeze(0)
        self.same_class_mask = torch.triu(same_block, diagonal=1)
        self.diff_class_mask = ~same_block

    def set_stats(self, sims):
        if not self.collect_stats:
            return
        with torch.no_grad():
            self.same_class_center_sim = torch.mean(sims[self.same_class_mask.to(sims.device)]).item()
            self.diff_class_center_sim = torch.mean(sims[self.diff_class_mask.to(sims.device)]).item()

    def get_default_distance(self):
        return CosineSimilarity()

    def get_default_reducer(self):
        return DivisorReducer()
