"""Large-margin softmax loss (Liu, Wen, Yu & Yang, "Large-Margin Softmax Loss for Convolutional
Neural Networks", ICML 2016, https://arxiv.org/abs/1612.02295).

Also the base of the angular-margin family: ArcFace, CosFace, SphereFace and SubCenterArcFace
override only the hooks ``init_margin``, ``modify_cosine_of_target_classes``, ``scale_logits``,
``get_cosine`` and ``cast_types``.
"""

import math
import numbers

import torch

from ..distances import CosineSimilarity
from ..ops.angles import safe_acos
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import SizeArgumentError, require
from .base_metric_loss_function import BaseMetricLossFunction
from .mixins import ClassMatrixMixin


def check_positive_int(owner, name, value):
    require(
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0,
        f"{owner} needs {name} to be a positive integer, got {value!r}",
        SizeArgumentError,
    )


class LargeMarginSoftmaxLoss(ClassMatrixMixin, BaseMetricLossFunction):
    """Softmax cross-entropy whose target logit carries a multiplicative angular margin.

    With ``W`` of shape ``(embedding_size, num_classes)`` (one column per class),
    ``c_ij = cos(x_i, W_j)`` and ``theta_i = acos(c_{i,y_i})``, the target cosine is replaced by

        psi(theta) = (-1)^k cos(m theta) - 2k,   k = floor(theta m / pi)   (m = int(margin))

    which decreases monotonically in theta; ``cos(m theta)`` is expanded as a polynomial in
    ``c`` (Eq. 7 of the paper). Every logit is then multiplied by ``||x_i|| ||W_j|| scale``, and

        loss_i = CE(logits_i, y_i) * w_i

    with ``w_i`` the miner weight of element ``i`` (1 without ``indices_tuple``). Labels are
    required and must be class indices in ``[0, num_classes)``; ``ref_emb`` is not supported.
    The distance must be :class:`CosineSimilarity`. ``get_logits(x)`` gives the scaled logits
    without margin. Add ``W`` to an optimizer (``loss.parameters()``) to learn it.

    Args:
        num_classes: number of classes ``C``.
        embedding_size: width ``D`` of the embeddings.
        margin: the integer multiplier ``m`` (truncated with ``int``); 1 means plain softmax.
        scale: multiplies every logit.
        weight_init_func: initialiser applied to ``W`` (default ``torch.nn.init.normal_``).
        weight_regularizer, weight_reg_weight: optional regularizer of the class vectors
            (given ``W.t()``, one row per class).
    """

    def __init__(self, num_classes, embedding_size, margin=4, scale=1, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(owner, "num_classes", num_classes)
        check_positive_int(owner, "embedding_size", embedding_size)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.margin = margin
        self.num_classes = num_classes
        self.scale = scale
        self.add_to_recordable_attributes(list_of_names=["num_classes", "margin", "scale"], is_stat=False)
        self.add_to_recordable_attributes(name="avg_angle", is_stat=True)
        self.init_margin()
        self.W = torch.nn.Parameter(torch.empty(embedding_size, num_classes))
        self.weight_init_func(self.W)
        self.cross_entropy = torch.nn.CrossEntropyLoss(reduction="none")

    # ------------------------------------------------------------------------------------------
    # hooks that the subclasses override

    def init_margin(self):
        self.margin = int(self.margin)
        require(
            self.margin >= 1, f"{type(self).__name__} needs margin >= 1, got {self.margin}", SizeArgumentError
        )
        self.max_n = self.margin // 2
        # cos(m t) = sum_n (-1)^n C(m, 2n) cos(t)^(m - 2n) sin(t)^(2n); kept as plain tensors
        # (not buffers) so they stay out of the state_dict.
        self.n_range = torch.arange(self.max_n + 1)
        self.margin_choose_n = torch.tensor(
            [float(math.comb(self.margin, 2 * n)) for n in range(self.max_n + 1)], dtype=torch.float64
        )
        self.cos_powers = self.margin - 2 * self.n_range
        self.alternating = 1 - 2 * (self.n_range % 2)

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        cos_m_theta = self.get_cos_with_margin(cosine_of_target_classes)
        angles = self.get_angles(cosine_of_target_classes)
        with torch.no_grad():
            # theta lies in [k pi/m, (k+1) pi/m]; the piece index is a constant for autograd.
            k = torch.floor(angles / (math.pi / self.margin))
        sign = 1 - 2 * torch.remainder(k, 2)
        return sign * cos_m_theta - 2 * k

    def scale_logits(self, logits, embeddings):
        embedding_norms = self.distance.get_norm(embeddings)
        weight_norms = self.distance.get_norm(self._class_weights(embeddings), dim=0)
        return logits * (embedding_norms.unsqueeze(1) * weight_norms.unsqueeze(0)) * self.scale

    def get_cosine(self, embeddings):
        return self.distance(embeddings, self._class_weights(embeddings).t())

    def cast_types(self, dtype, device):
        # In place on .data: the Parameter object (and so any optimizer holding it) is kept.
        self.W.data = c_f.to_device(self.W.data, device=device, dtype=dtype)
        # The binomial coefficients pass float16's range from margin 19 on (C(19, 8) > 65504).
        helper_dtype = accumulation_dtype(dtype)
        for name in ("n_range", "margin_choose_n", "cos_powers", "alternating"):
            setattr(self, name, c_f.to_device(getattr(self, name), device=device, dtype=helper_dtype))

    # ------------------------------------------------------------------------------------------
    # helpers

    def get_cos_with_margin(self, cosine):
        n, choose, powers, signs = (
            c_f.to_device(getattr(self, name), cosine, dtype=cosine.dtype)
            for name in ("n_range", "margin_choose_n", "cos_powers", "alternating")
        )
        c = cosine.unsqueeze(1)
        return torch.sum(signs * choose * c**powers * (1 - c**2) ** n, dim=1)

    def get_angles(self, cosine_of_target_classes):
        angles = safe_acos(cosine_of_target_classes)
        if self.collect_stats:
            with torch.no_grad():
                self.avg_angle = math.degrees(torch.mean(angles).item())
        return angles

    def get_target_mask(self, embeddings, labels):
        """One-hot ``(N, num_classes)`` mask of the target classes, in the embeddings' dtype."""
        mask = torch.zeros(
            labels.shape[0], self.num_classes, dtype=embeddings.dtype, device=embeddings.device
        )
        return mask.scatter_(1, labels.long().unsqueeze(1), 1)

    def class_matrix_shape(self):
        return self.num_classes, self.W.shape[0]

    def _class_weights(self, embeddings):
        # A differentiable cast: float16 inputs are computed against a float32 view of W.
        return self.W if self.W.dtype == embeddings.dtype else self.W.to(embeddings.dtype)

    # ------------------------------------------------------------------------------------------

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        self.start_class_loss(embeddings, labels, ref_emb, ref_labels)
        dtype = embeddings.dtype
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=dtype)
        x = embeddings.to(accumulation_dtype(dtype))
        targets = labels.long().unsqueeze(1)
        cosine = self.get_cosine(x)
        modified = self.modify_cosine_of_target_classes(cosine.gather(1, targets).squeeze(1))
        logits = self.scale_logits(cosine.scatter(1, targets, modified.unsqueeze(1)), x)
        losses = self.cross_entropy(logits, labels.long()) * miner_weights.to(x.dtype)
        return self.element_loss_dict(losses, embeddings, self.W.t())

    def get_default_distance(self):
        return CosineSimilarity()

    def get_logits(self, embeddings):
        """Scaled logits ``(N, num_classes)`` without the margin (for inference/accuracy)."""
        self.check_class_inputs(embeddings)
        return self.scale_logits(self.get_cosine(embeddings), embeddings)
