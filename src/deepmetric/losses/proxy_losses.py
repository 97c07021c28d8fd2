"""Proxy-NCA loss (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies",
ICCV 2017, https://arxiv.org/abs/1703.07464)."""

import torch

from ..utils import common_functions as c_f
from ..utils.validation import check_class_inputs
from .large_margin_softmax_loss import check_positive_int
from .mixins import WeightRegularizerMixin
from .nca_loss import NCALoss


class ProxyNCALoss(WeightRegularizerMixin, NCALoss):
    """NCA against one learnable proxy per class instead of the other batch elements:

        loss_i = -log softmax_c(softmax_scale * s(x_i, p_c))[y_i] * w_i

    with ``s = -distance`` (default squared L2) or the similarity, and ``w_i`` the miner weight
    (from the tuple's anchors only). ``softmax_scale`` (default 1) is passed as a keyword.

    Parameter ``proxies``: ``(num_classes, embedding_size)``, initialised with ``normal_`` unless
    ``weight_init_func`` is given; the weight regularizer receives it. ``get_logits`` returns
    the raw ``distance(x, proxies)`` (not negated). Labels must lie in ``[0, num_classes)``.

    Args:
        num_classes: number of classes (proxies).
        embedding_size: width of the embeddings.
    """

    def __init__(self, num_classes, embedding_size, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        check_positive_int(type(self).__name__, "embedding_size", embedding_size)
        self.proxies = torch.nn.Parameter(torch.empty(num_classes, embedding_size))
        self.weight_init_func(self.proxies)
        self.num_classes = num_classes
        self.proxy_labels = torch.arange(num_classes)
        self.add_to_recordable_attributes(list_of_names=["num_classes"], is_stat=False)

    def cast_types(self, dtype, device):
        self.proxies.data = c_f.to_device(self.proxies.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        self._check_inputs(embeddings, labels)
        self.cast_types(embeddings.dtype, embeddings.device)
        proxy_labels = c_f.to_device(self.proxy_labels, labels)
        loss_dict = self.nca_computation(embeddings, self.proxies, labels, proxy_labels, indices_tuple)
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def get_logits(self, embeddings):
        """``(N, num_classes)`` raw distances (or similarities) to the proxies."""
        self._check_inputs(embeddings)
        return self.distance(embeddings, self.proxies.to(embeddings.dtype))

    def _check_inputs(self, embeddings, labels=None):
        check_class_inputs(type(self).__name__, embeddings, labels, self.num_classes, self.proxies.shape[1])
