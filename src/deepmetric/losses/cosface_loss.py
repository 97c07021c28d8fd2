"""CosFace (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
CVPR 2018, https://arxiv.org/abs/1801.09414)."""

import torch

from ..utils import common_functions as c_f
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss


class CosFaceLoss(LargeMarginSoftmaxLoss):
    """Softmax cross-entropy with an additive cosine margin on the target class.

        loss_i = CE(scale * (cos(x_i, W) - margin * onehot(y_i)), y_i) * w_i

    ``get_logits(x) = scale * cos(x, W)``. Positional arguments are
    ``(num_classes, embedding_size)``; everything else is as in
    :class:`LargeMarginSoftmaxLoss`.

    Args:
        margin: subtracted from the target cosine.
        scale: the logit scale.
    """

    def __init__(self, *args, margin=0.35, scale=64, **kwargs):
        super().__init__(*args, margin=margin, scale=scale, **kwargs)

    def init_margin(self):
        pass

    def cast_types(self, dtype, device):
        self.W.data = c_f.to_device(self.W.data, device=device, dtype=dtype)

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        if self.collect_stats:
            with torch.no_grad():
                self.get_angles(cosine_of_target_classes)
        return cosine_of_target_classes - self.margin

    def scale_logits(self, logits, *_):
        return logits * self.scale
