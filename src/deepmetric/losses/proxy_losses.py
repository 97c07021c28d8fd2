"""Proxy-NCA loss (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies",
ICCV 2017, https://arxiv.org/abs/1703.07464)."""

import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
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
        loss_dict = self._proxy_nca(embeddings, labels, indices_tuple)
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def _proxy_nca(self, embeddings, labels, indices_tuple):
        """NCA against the proxies. Each element has exactly one positive (its class proxy), so
        ``-log(sum of positive probabilities)`` is the cross-entropy of the scaled logits."""
        dtype = embeddings.dtype
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=dtype, using_ref=True)
        mat = self.distance(embeddings, self.proxies)
        if not self.distance.is_inverted:
            mat = -mat
        # float16 logits would lose most of their precision in the exponentials.
        logits = self.softmax_scale * (mat.float() if dtype == torch.float16 else mat)
        losses = torch.nn.functional.cross_entropy(logits, labels.long(), reduction="none")
        # As in NCALoss: elements whose probability of the positive underflows to 0 are dropped.
        kept = torch.exp(-losses.detach()).to(dtype) != 0
        if not bool(kept.all()):
            if not bool(kept.any()):
                return self.zero_losses()
            losses, miner_weights = losses[kept], miner_weights[kept]
            indices = c_f.torch_arange_from_size(embeddings)[kept]
        else:
            indices = c_f.torch_arange_from_size(embeddings)
        losses = losses.to(dtype) * miner_weights
        return {"loss": {"losses": losses, "indices": indices, "reduction_type": "element"}}

    def get_logits(self, embeddings):
        """``(N, num_classes)`` raw distances (or similarities) to the proxies."""
        self._check_inputs(embeddings)
        return self.distance(embeddings, self.proxies.to(embeddings.dtype))

    def _check_inputs(self, embeddings, labels=None):
        check_class_inputs(type(self).__name__, embeddings, labels, self.num_classes, self.proxies.shape[1])
