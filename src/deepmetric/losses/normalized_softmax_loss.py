"""Normalized softmax (Zhai & Wu, "Classification is a Strong Baseline for Deep Metric
Learning", BMVC 2019, https://arxiv.org/abs/1811.12649)."""

import torch

from ..distances import DotProductSimilarity
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction
from .large_margin_softmax_loss import check_positive_int
from .mixins import ClassMatrixMixin


class NormalizedSoftmaxLoss(ClassMatrixMixin, BaseMetricLossFunction):
    """Softmax cross-entropy over similarities to normalised class vectors, with a temperature.

    With ``W`` of shape ``(embedding_size, num_classes)`` and ``W^_j = W_j / ||W_j||_p``:

        logits_ij = sim(x_i, W^_j) / temperature      (negated when the distance is not a similarity)
        loss_i = CE(logits_i, y_i) * w_i

    The default distance, ``DotProductSimilarity()``, normalises the embeddings, so the
    logits are cosines divided by the temperature; any distance is accepted. ``get_logits``
    returns the logits above. Labels are required and must lie in ``[0, num_classes)``.

    Like the reference, ``embedding_size`` and ``num_classes`` are recorded as
    hyper-parameters but read 0 (they are not stored); use ``W.shape``.
    """

    def __init__(self, num_classes, embedding_size, temperature=0.05, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        check_positive_int(type(self).__name__, "embedding_size", embedding_size)
        self.temperature = temperature
        self.W = torch.nn.Parameter(torch.empty(embedding_size, num_classes))
        self.weight_init_func(self.W)
        self.cross_entropy = torch.nn.CrossEntropyLoss(reduction="none")
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "num_classes", "temperature"], is_stat=False
        )

    def cast_types(self, dtype, device):
        self.W.data = c_f.to_device(self.W.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.start_class_loss(embeddings, labels, ref_emb, ref_labels)
        dtype = embeddings.dtype
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=dtype)
        x = embeddings.to(accumulation_dtype(dtype))
        unweighted = self.cross_entropy(self.get_logits(x), labels.long())
        losses = unweighted * miner_weights.to(x.dtype)
        return self.element_loss_dict(losses, embeddings, self.W.t())

    def get_default_distance(self):
        return DotProductSimilarity()

    def get_logits(self, embeddings):
        """``(N, num_classes)`` similarities to the normalised class vectors / temperature."""
        self.check_class_inputs(embeddings)
        weights = self.W if self.W.dtype == embeddings.dtype else self.W.to(embeddings.dtype)
        # Normalised here even when the distance normalises again, as in the reference: the
        # second normalisation still moves the last bits, and the distance's statistics see
        # unit class vectors.
        weights = self.distance.normalize(weights, dim=0)
        logits = self.distance(embeddings, weights.t()) / self.temperature
        return logits if self.distance.is_inverted else -logits

    def class_matrix_shape(self):
        return self.W.shape[1], self.W.shape[0]
