"""N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective",
NeurIPS 2016)."""

import torch

from ..distances import DotProductSimilarity
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction


class NPairsLoss(BaseMetricLossFunction):
    """Softmax over one positive per class: each anchor must pick its own positive among the
    positives of the other classes.

    One pair ``(a_m, p_m)`` is taken per distinct anchor label (the first positive pair of that
    label in row-major order, labels in increasing order); with ``k`` such pairs::

        S = sim(anchors, positives)            (k x k; negated for a distance)
        loss_m = -log( exp(S_mm) / sum_n exp(S_mn) )

    Labels are required; a separate reference set is not supported. ``num_pairs`` (a statistic)
    holds ``k``. With more than two samples per class NTXentLoss uses all of them.
    """

    accepts_label_relation = False  # it keeps one pair per distinct label

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(name="num_pairs", is_stat=True)
        self.cross_entropy = torch.nn.CrossEntropyLoss(reduction="none")

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        if indices_tuple is None:
            anchor_idx, positive_idx = self._first_pair_per_label(labels)
        else:
            anchor_idx, positive_idx = lmu.convert_to_pos_pairs_with_unique_labels(indices_tuple, labels)
        self.num_pairs = len(anchor_idx)
        if self.num_pairs == 0:
            return self.zero_losses()
        sim = self.distance(embeddings[anchor_idx], embeddings[positive_idx])
        if not self.distance.is_inverted:
            sim = -sim
        targets = torch.arange(self.num_pairs, device=embeddings.device)
        losses = self.cross_entropy(sim.to(accumulation_dtype(sim.dtype)), targets)
        return {"loss": {"losses": losses.to(sim.dtype), "indices": anchor_idx, "reduction_type": "element"}}

    @staticmethod
    def _first_pair_per_label(labels):
        """The first and second occurrence of every label that occurs at least twice, in label order.

        Same result as taking, from all positive pairs in row-major order, the first pair of each
        anchor label, without listing the pairs.
        """
        order = torch.argsort(labels, stable=True)
        _, counts = torch.unique_consecutive(labels[order], return_counts=True)
        starts = torch.cumsum(counts, dim=0) - counts
        starts = starts[counts >= 2]
        return order[starts], order[starts + 1]

    def get_default_distance(self):
        return DotProductSimilarity()
