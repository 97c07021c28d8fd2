"""SphereFace (Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition",
CVPR 2017, https://arxiv.org/abs/1704.08063)."""

import torch

from .large_margin_softmax_loss import LargeMarginSoftmaxLoss


class SphereFaceLoss(LargeMarginSoftmaxLoss):
    """The large-margin softmax with the class vectors' norms left out (A-Softmax).

    Same target logit ``psi(theta) = (-1)^k cos(m theta) - 2k`` with integer ``m`` as
    :class:`LargeMarginSoftmaxLoss`, but the logits are multiplied by ``||x_i||_2 * scale``
    only, so the class vectors act as if normalised:

        loss_i = CE(||x_i|| * scale * logits_i, y_i) * w_i

    ``get_logits(x) = cos(x, W) * ||x_i|| * scale``.
    """

    def scale_logits(self, logits, embeddings):
        return logits * torch.norm(embeddings, p=2, dim=1).unsqueeze(1) * self.scale
