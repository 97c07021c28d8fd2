"""ArcFace (Deng, Guo, Xue & Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
Recognition", CVPR 2019, https://arxiv.org/abs/1801.07698)."""

import math

import torch

from ..utils import common_functions as c_f
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss


class ArcFaceLoss(LargeMarginSoftmaxLoss):
    """Softmax cross-entropy with an additive angular margin on the target class.

    With ``theta_i = acos(cos(x_i, W_{y_i}))`` and ``m = radians(margin)``, the target logit is

        cos(theta_i + m)            if theta_i <= pi - m
        cos(theta_i) - m sin(m)     otherwise (keeps the logit decreasing in theta)

    the other logits are the plain cosines, and every logit is multiplied by ``scale``:
    ``loss_i = CE(s * logits_i, y_i) * w_i``. ``get_logits(x) = scale * cos(x, W)``.
    Everything else (``W`` of shape ``(embedding_size, num_classes)``, labels, miner weights,
    weight regularizer) is as in :class:`LargeMarginSoftmaxLoss`.

    Args:
        num_classes, embedding_size: shape of ``W``.
        margin: the angular margin in degrees (28.6 degrees is 0.5 radians).
        scale: the logit scale ``s``.
    """

    def __init__(self, num_classes, embedding_size, margin=28.6, scale=64, **kwargs):
        super().__init__(
            num_classes=num_classes, embedding_size=embedding_size, margin=margin, scale=scale, **kwargs
        )

    def init_margin(self):
        self.margin = math.radians(self.margin)

    def cast_types(self, dtype, device):
        self.W.data = c_f.to_device(self.W.data, device=device, dtype=dtype)

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        angles = self.get_angles(cosine_of_target_classes)
        m = self.margin
        return torch.where(
            angles <= math.pi - m, torch.cos(angles + m), torch.cos(angles) - m * math.sin(m)
        )

    def scale_logits(self, logits, *_):
        return logits * self.scale
