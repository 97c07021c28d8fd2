"""Proxy anchor loss (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020,
https://arxiv.org/abs/2003.13911)."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.fused_backward import replayed_gradients, wants_graph_of_gradient
from ..reducers import DivisorReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.validation import check_class_inputs
from .base_metric_loss_function import BaseMetricLossFunction
from .large_margin_softmax_loss import check_positive_int
from .mixins import WeightRegularizerMixin


def _plain_proxy_terms(sims, labels, log_weights, scale, margin, num_classes):
    """``_ProxyTerms`` from plain torch operations (what second derivatives are taken of)."""
    pos_mask = labels.unsqueeze(1) == torch.arange(num_classes, device=sims.device)
    logits = scale * (margin + torch.where(pos_mask, -sims, sims)) + log_weights.unsqueeze(1)
    zero = torch.zeros(1, num_classes, dtype=sims.dtype, device=sims.device)
    pos = torch.logsumexp(torch.cat([logits.masked_fill(~pos_mask, -torch.inf), zero]), dim=0)
    neg = torch.logsumexp(torch.cat([logits.masked_fill(pos_mask, -torch.inf), zero]), dim=0)
    return pos, neg


class _ProxyTerms(torch.autograd.Function):
    """``pos_c`` and ``neg_c`` of every proxy from the ``(N, C)`` matrix ``sims``, in one pass.

    With ``A = scale * (margin + s) + log_w`` for the negative entries and
    ``scale * (margin - s) + log_w`` for each row's positive entry ``(i, y_i)`` (``scale`` is
    ``alpha`` for similarities and ``-alpha`` for distances), ``neg_c = log(1 + sum_{i: y_i != c}
    exp(A_ic))`` and ``pos_c = log(1 + sum_{i: y_i = c} exp(A_ic))``. The positive entries are
    gathered as a vector (one per row) instead of masking a dense copy, each term is shifted by
    its own maximum, and the backward pass reuses the saved exponents' logits, so the dense
    matrix is walked a handful of times instead of through a chain of autograd nodes.
    """

    @staticmethod
    def forward(ctx, sims, labels, log_weights, scale, margin, num_classes):
        labels_column = labels.unsqueeze(1)
        neg_logits = torch.add(log_weights.unsqueeze(1) + scale * margin, sims, alpha=scale)
        neg_logits.scatter_(1, labels_column, -float("inf"))
        pos_logits = log_weights + scale * margin - scale * sims.gather(1, labels_column).squeeze(1)
        neg_shift = neg_logits.amax(dim=0).clamp_min(0)
        neg_sum = torch.exp(neg_logits - neg_shift).sum(dim=0)
        neg = neg_shift + torch.log(torch.exp(-neg_shift) + neg_sum)
        pos_shift = torch.zeros(num_classes, dtype=sims.dtype, device=sims.device)
        pos_shift = pos_shift.scatter_reduce(0, labels, pos_logits, reduce="amax")
        pos_sum = torch.zeros_like(pos_shift).index_add_(0, labels, torch.exp(pos_logits - pos_shift[labels]))
        pos = pos_shift + torch.log(torch.exp(-pos_shift) + pos_sum)
        ctx.save_for_backward(neg_logits, pos_logits, labels, neg, pos, sims, log_weights)
        ctx.constants = (scale, margin, num_classes)
        return pos, neg

    @staticmethod
    def backward(ctx, grad_pos, grad_neg):
        neg_logits, pos_logits, labels, neg, pos, sims, log_weights = ctx.saved_tensors
        if wants_graph_of_gradient():
            inputs = (sims, labels, log_weights, *ctx.constants)
            return replayed_gradients(_plain_proxy_terms, inputs, (grad_pos, grad_neg))
        scale = ctx.constants[0]
        # d neg_c / d A_ic = exp(A_ic - neg_c); the positive entries are -inf there, so 0.
        grad = torch.exp(neg_logits - neg).mul_(scale * grad_neg)
        pos_grad = -scale * grad_pos[labels] * torch.exp(pos_logits - pos[labels])
        grad.scatter_(1, labels.unsqueeze(1), pos_grad.unsqueeze(1))
        return grad, None, None, None, None, None


class ProxyAnchorLoss(WeightRegularizerMixin, BaseMetricLossFunction):
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
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        self._check_inputs(embeddings, labels)
        dtype, device = embeddings.dtype, embeddings.device
        self.cast_types(dtype, device)
        x = embeddings.to(accumulation_dtype(dtype))
        log_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=x.dtype) - 1
        sims = self.get_logits(x)
        labels = labels.long()
        scale = self.alpha if self.distance.is_inverted else -self.alpha
        pos_term, neg_term = _ProxyTerms.apply(
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
        self._check_inputs(embeddings)
        return self.distance(embeddings, self.proxies.to(embeddings.dtype))

    def _check_inputs(self, embeddings, labels=None):
        check_class_inputs(type(self).__name__, embeddings, labels, self.num_classes, self.proxies.shape[1])
