"""SoftTriple loss (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet
Sampling", ICCV 2019, https://arxiv.org/abs/1909.05235)."""

import math

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import require
from .base_metric_loss_function import BaseMetricLossFunction
from .large_margin_softmax_loss import check_positive_int
from .mixins import ClassMatrixMixin


class SoftTripleLoss(ClassMatrixMixin, BaseMetricLossFunction):
    """A softmax loss in which every class has ``K = centers_per_class`` learnable centres.

    With ``s_ick = sim(x_i, center_ck)``, the similarity to class ``c`` is a soft maximum over
    its centres, ``S_ic = sum_k softmax_k(s_ick / gamma) * s_ick``, and

        loss_i = CE(la * (S_i - margin * onehot(y_i)), y_i) * w_i

    (``w_i`` = miner weight). ``self.gamma`` stores ``1 / gamma``, as in the reference.

    Parameter ``fc``: ``(embedding_size, num_classes * K)``, centres of class ``c`` in columns
    ``c*K ... c*K + K - 1``, initialised with ``kaiming_uniform_(a=sqrt(5))`` unless
    ``weight_init_func`` is given. The weight regularizer receives ``fc.t()`` (pair it with
    ``SparseCentersRegularizer(num_classes, K)`` to merge redundant centres). The distance must
    be a similarity (default ``CosineSimilarity``). Labels must lie in ``[0, num_classes)``.

    Args:
        num_classes: number of classes.
        embedding_size: width of the embeddings.
        centers_per_class: ``K``.
        la: scale of the logits (lambda in the paper).
        gamma: temperature of the soft maximum over centres.
        margin: margin subtracted from the target class similarity (delta).
    """

    def __init__(
        self, num_classes, embedding_size, centers_per_class=10, la=20, gamma=0.1, margin=0.01, **kwargs
    ):
        super().__init__(**kwargs)
        require(
            self.distance.is_inverted,
            "SoftTripleLoss needs a similarity (distance.is_inverted=True), "
            f"got {type(self.distance).__name__}",
        )
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        check_positive_int(type(self).__name__, "embedding_size", embedding_size)
        check_positive_int(type(self).__name__, "centers_per_class", centers_per_class)
        self.la = la
        self.gamma = 1.0 / gamma
        self.margin = margin
        self.num_classes = num_classes
        self.centers_per_class = centers_per_class
        self.fc = torch.nn.Parameter(torch.empty(embedding_size, num_classes * centers_per_class))
        self.weight_init_func(self.fc)
        # "embedding_size" is recorded but, as in the reference, never assigned (reads 0).
        self.add_to_recordable_attributes(
            list_of_names=["la", "gamma", "margin", "centers_per_class", "num_classes", "embedding_size"],
            is_stat=False,
        )

    def cast_types(self, dtype, device):
        self.fc.data = c_f.to_device(self.fc.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.start_class_loss(embeddings, labels, ref_emb, ref_labels)
        x = embeddings.to(accumulation_dtype(embeddings.dtype))
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=x.dtype)
        sim_to_classes = self.get_logits(x)
        target = torch.nn.functional.one_hot(labels.long(), self.num_classes).to(x.dtype)
        logits = self.la * (sim_to_classes - self.margin * target)
        losses = torch.nn.functional.cross_entropy(logits, labels.long(), reduction="none") * miner_weights
        return self.element_loss_dict(losses, embeddings, self.fc.t())

    def get_default_distance(self):
        return CosineSimilarity()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.kaiming_uniform_, a=math.sqrt(5))

    def get_logits(self, embeddings):
        """``(N, num_classes)`` soft-max similarities ``S_ic`` (no margin, no scale)."""
        self.check_class_inputs(embeddings)
        num_classes, per_class = self.num_classes, self.centers_per_class
        # Regroup the columns centre-major, (k, c) instead of (c, k), before the product: the soft
        # maximum then reduces over a middle dimension of (N, K, C), which vectorises over the
        # classes. Over the last dimension (only K wide) torch's softmax was ~15x slower.
        centers = self.fc.to(embeddings.dtype).view(-1, num_classes, per_class).transpose(1, 2)
        sim_to_centers = self.distance(embeddings, centers.reshape(-1, per_class * num_classes).t())
        sim_to_centers = sim_to_centers.view(-1, per_class, num_classes)
        prob = torch.softmax(sim_to_centers * self.gamma, dim=1)
        return torch.sum(prob * sim_to_centers, dim=1)

    def class_matrix_shape(self):
        return self.num_classes, self.fc.shape[0]
