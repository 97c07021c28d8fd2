"""Instance loss (Zheng, Zheng, Garrett, Yang, Xu & Shen, "Dual-Path Convolutional Image-Text
Embeddings with Instance Loss", ACM TOMM 2020)."""

import torch

from ..distances import CosineSimilarity
from ..reducers import MeanReducer
from ..utils import common_functions as c_f
from .base_metric_loss_function import BaseMetricLossFunction


class InstanceLoss(BaseMetricLossFunction):
    """Softmax cross-entropy over the batch's scaled cosine similarities.

    With ``S = gamma * cos(x_i, x_j)`` (the ``N x N`` matrix, diagonal included) and ``t_i`` the
    rank of ``y_i`` among the sorted distinct labels of the batch:

        loss_i = -log softmax(S_i)[t_i]

    so the columns of the batch play the role of class logits, exactly as in the reference
    implementation (column ``t_i`` is the sample at position ``t_i``, not necessarily one of
    class ``y_i``). Labels are required; ``indices_tuple`` and ``ref_emb`` are not supported.

    Args:
        gamma: the scale applied to the cosine similarities.
    """

    accepts_label_relation = False  # its labels become class indices (targets of a softmax)

    def __init__(self, gamma=64, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.gamma = gamma
        self.add_to_recordable_attributes(list_of_names=["gamma"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.indices_tuple_not_supported(indices_tuple)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        _, targets = torch.unique(labels, return_inverse=True)
        logits = self.distance(embeddings) * self.gamma
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self):
        return MeanReducer()

    def get_default_distance(self):
        return CosineSimilarity()
