"""Proxy anchor loss (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020,
https://arxiv.org/abs/2003.13911)."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.proxy_anchor_terms import proxy_anchor_terms
from ..reducers import DivisorReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction
from .large_margin_softmax_loss import check_positive_int
from .mixins import ClassMatrixMixin


class ProxyAnchorLoss(ClassMatrixMixin, BaseMetricLossFunction):
    """Each learnable class proxy is an anchor for the batch. With ``s_ic = sim(x_i, p_c)``:

        pos_c = log(1 + sum_{i: y_i = c} exp(alpha * (margin - s_ic) + u_i))
        neg_c = log(1 + sum_{i: y_i != c} exp(alpha * (s_ic + margin) + u_i))

    (for a distance, ``margin - s`` becomes ``s - margin`` and ``s + margin`` becomes
    ``-margin - s``). ``u_i = w_i - 1`` with ``w_i`` the miner weight (0 without a miner).
    The default ``DivisorReducer`` divides the sum of ``pos_c`` by the number of proxies with
    a positive in the batch and the sum of ``neg_c`` by ``num_classes``.

    Parameter ``proxies``: ``(num_classes, embedding_size)``, initialised with
    ``kaiming_normal_(mode="fan_out")`` unless ``weight_init_func`` is given. Give it to an
    optimizer (``loss.parameters()``). Labels must lie in ``[0, num_classes)``.

    Args:
        num_classes: number of classes (proxies).
        embedding_size: width of the embeddings.
        margin: the margin ``delta``.
        alpha: the scale of the log-sum-exp.
    """

    def __init__(self, num_classes, embedding_size, margin=0.1, alpha=32, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        check_positive_int(type(self).__name__, "embedding_size", embedding_size)
        self.proxies = torch.nn.Parameter(torch.empty(num_classes, embedding_size))
        self.weight_init_func(self.proxies)
        self.num_classes = num_classes
        self.margin = margin
        self.alpha = alpha
        self.add_to_recordable_attributes(list_of_names=["num_classes", "alpha", "margin"], is_stat=False)

    def cast_types(self, dtype, device):
        self.proxies.data = c_f.to_device(self.proxies.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.start_class_loss(embeddings, labels, ref_emb, ref_labels)
        dtype = embeddings.dtype
        x = embeddings.to(accumulation_dtype(dtype))
        log_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=x.dtype) - 1
        sims = self.get_logits(x)
        labels = labels.long()
        scale = self.alpha if self.distance.is_inverted else -self.alpha
        pos_term, neg_term = proxy_anchor_terms(
            sims, labels, log_weights, scale, self.margin, self.num_classes
        )
        indices = c_f.torch_arange_from_size(self.proxies)
        loss_dict = {
            "pos_loss": {
                "losses": pos_term.to(dtype),
                "indices": indices,
                "reduction_type": "element",
                "divisor": int(torch.bincount(labels, minlength=self.num_classes).count_nonzero()),
            },
            "neg_loss": {
                "losses": neg_term.to(dtype),
                "indices": indices,
                "reduction_type": "element",
                "divisor": self.num_classes,
            },
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def get_default_reducer(self):
        return DivisorReducer()

    def get_default_distance(self):
        return CosineSimilarity()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.kaiming_normal_, mode="fan_out")

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_logits(self, embeddings):
        """``(N, num_classes)`` distances (similarities by default) to the proxies."""
        self.check_class_inputs(embeddings)
        return self.distance(embeddings, self.proxies.to(embeddings.dtype))

    def class_matrix_shape(self):
        return self.num_classes, self.proxies.shape[1]
