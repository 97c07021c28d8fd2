"""Proxy-NCA (Movshovitz-Attias, Toshev, Leung, Ioffe & Singh, "No Fuss Distance Metric Learning
using Proxies", ICCV 2017, https://arxiv.org/abs/1703.07464).

The module keeps the reference's name, ``proxy_losses``, because users import it directly."""

import torch

from ..utils import common_functions as c_f
from ..utils.validation import whole_number_labels
from .large_margin_softmax_loss import check_positive_int
from .mixins import ClassMatrixMixin
from .nca_loss import NCALoss


class ProxyNCALoss(ClassMatrixMixin, NCALoss):
    """NCA where each class is represented by one learnable proxy instead of the batch's samples.

    With proxies ``P`` of shape ``(num_classes, embedding_size)`` (one row per class):

        loss_i = -log softmax_c(softmax_scale * s(x_i, P_c))[y_i] * w_i

    where ``s = -distance`` for distances (the default is squared L2, ``LpDistance(power=2)``,
    which normalises embeddings and proxies) and ``s = similarity`` otherwise. ``w_i`` are miner
    weights counted over the anchors of ``indices_tuple`` only (all ones without a miner).
    ``softmax_scale`` (default 1) is passed through ``**kwargs`` to :class:`NCALoss`. Rows whose
    target probability underflows to exactly 0 are dropped, as in NCALoss.

    Labels are required and must be class indices in ``[0, num_classes)``; ``ref_emb`` is not
    supported. ``get_logits(x)`` returns the raw ``distance(x, proxies)`` matrix (not negated,
    not scaled), like the reference. An optional ``weight_regularizer`` is applied to the
    proxies (``"weight_reg_loss"``). The proxies are cast to the embeddings' dtype and device
    on every call, keeping the same ``Parameter`` object so an optimizer stays valid.

    Args:
        num_classes: number of proxies, one per class.
        embedding_size: width of the embeddings and proxies.
        **kwargs: ``softmax_scale``, ``weight_init_func`` (default ``normal_``),
            ``weight_regularizer``, ``weight_reg_weight`` and the base loss arguments.
    """

    def __init__(self, num_classes, embedding_size, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        check_positive_int(type(self).__name__, "embedding_size", embedding_size)
        self.num_classes = num_classes
        self.proxies = torch.nn.Parameter(torch.empty(num_classes, embedding_size))
        self.weight_init_func(self.proxies)
        self.proxy_labels = torch.arange(num_classes)
        self.add_to_recordable_attributes(list_of_names=["num_classes"], is_stat=False)

    def cast_types(self, dtype, device):
        self.proxies.data = c_f.to_device(self.proxies.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        # Labels only meet the proxies' labels 0..C-1 through equality, so floating labels with
        # whole values select the same proxies (as in the reference). (The batch is its own
        # reference set, checked above with the labels as given.)
        labels = whole_number_labels(type(self).__name__, labels)
        self.start_class_loss(embeddings, labels, embeddings, labels)
        proxy_labels = c_f.to_device(self.proxy_labels, labels)
        loss_dict = self.nca_computation(embeddings, self.proxies, labels, proxy_labels, indices_tuple)
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def get_logits(self, embeddings):
        """``(N, num_classes)`` distances (or similarities) to the proxies."""
        self.check_class_inputs(embeddings)
        return self.distance(embeddings, self.proxies)

    def class_matrix_shape(self):
        return self.num_classes, self.proxies.shape[1]
