"""P2SGrad (Zhang, Zhao, Yan, Yi, Tang & Li, "P2SGrad: Refined Gradients for Optimizing Deep Face
Models", CVPR 2019, https://arxiv.org/abs/1905.02479)."""

import torch

from ..ops.cosine_to_one_hot_mse import cosine_to_one_hot_mse
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError
from ..utils.validation import check_class_inputs
from .base_metric_loss_function import BaseMetricLossFunction
from .large_margin_softmax_loss import check_positive_int


def unit_columns(weight):
    """Every column rescaled to unit L2 norm, the reference's way (``renorm`` to a tiny maximum
    norm, then scaled up), so that the stored weights agree with the reference bit for bit."""
    return weight.renorm(2, 1, 1e-5).mul(1e5)


class P2SGradLoss(BaseMetricLossFunction):
    """Mean squared error between cosines to unit class vectors and the one-hot targets.

    With ``weight`` of shape ``(descriptors_dim, num_classes)``, every column of unit norm:

        cos_ij = clamp(x_i . weight_j / ||x_i||, -1, 1)
        loss = mean_{i,j} (cos_ij - [j == y_i])^2

    Its gradient is the P2SGrad update of Eq. 11 in the paper, which replaces the
    hyper-parameter-dependent gradients of the margin-softmax losses. The columns are
    re-normalised (in place, on ``weight.data``) at every call. Labels are required and must
    lie in ``[0, num_classes)``; ``indices_tuple`` and ``ref_emb`` are not supported. No
    distance is used. The loss is already reduced.

    Args:
        descriptors_dim: width of the embeddings.
        num_classes: number of classes.
    """

    accepts_label_relation = False  # its labels are class indices

    def __init__(self, descriptors_dim, num_classes, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(type(self).__name__, "descriptors_dim", descriptors_dim)
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        self.descriptors_dim = descriptors_dim
        self.num_classes = num_classes
        self.weight = torch.nn.Parameter(torch.empty(descriptors_dim, num_classes))
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self.weight.copy_(unit_columns(self.weight))
        self.m_loss = torch.nn.MSELoss()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        c_f.indices_tuple_not_supported(indices_tuple)
        c_f.labels_required(labels)
        check_class_inputs(type(self).__name__, embeddings, labels, self.num_classes, self.descriptors_dim)
        dtype = embeddings.dtype
        self.weight.data = c_f.to_device(unit_columns(self.weight.data), embeddings, dtype=dtype)
        self._check_unit_columns(dtype)

        work = accumulation_dtype(dtype)
        x = embeddings.to(work)
        weight = self.weight if self.weight.dtype == work else self.weight.to(work)
        loss = cosine_to_one_hot_mse(x, weight, labels.long())
        return {"loss": {"losses": loss.to(dtype), "indices": None, "reduction_type": "already_reduced"}}

    def _check_unit_columns(self, dtype):
        # Only a zero (or non-finite) column survives the renormalisation with a wrong norm, and
        # the renormalisation leaves no column longer than 1: the smallest norm tells.
        rtol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
        norms = self.weight.detach().float().norm(dim=0)
        if not float(norms.min()) > 1.0 - rtol:  # also True for NaN
            bad = torch.nonzero(~(torch.abs(norms - 1.0) < rtol)).flatten()
            raise ArgumentError(
                f"P2SGradLoss.weight columns must have unit L2 norm; columns {bad[:10].tolist()} have "
                f"norms {norms[bad[:10]].tolist()} (a zero or non-finite column cannot be normalised)"
            )
