"""Sub-center ArcFace (Deng, Guo, Liu, Zafeiriou et al., "Sub-center ArcFace: Boosting Face
Recognition by Large-scale Noisy Web Faces", ECCV 2020)."""

import math

import torch

from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from .arcface_loss import ArcFaceLoss
from .large_margin_softmax_loss import check_positive_int


class SubCenterArcFaceLoss(ArcFaceLoss):
    """ArcFace with ``sub_centers`` (K) vectors per class; a sample is compared with the
    closest sub-center of each class:

        cos_ic = max_k cos(x_i, W_{c,k})

    and the ArcFace margin and scale are applied to ``cos_ic`` (see :class:`ArcFaceLoss`).
    ``W`` has shape ``(embedding_size, num_classes * sub_centers)``; class ``c`` owns columns
    ``c*K ... c*K + K - 1``. Noisy samples settle on non-dominant sub-centers;
    :meth:`get_outliers` finds them so that they can be dropped from the data set.

    ``num_classes`` and ``embedding_size`` may be given by keyword (as in the reference) or
    positionally.
    """

    def __init__(self, num_classes, embedding_size, margin=28.6, scale=64, sub_centers=3, **kwargs):
        check_positive_int(type(self).__name__, "num_classes", num_classes)
        check_positive_int(type(self).__name__, "sub_centers", sub_centers)
        super().__init__(
            num_classes=num_classes * sub_centers,
            embedding_size=embedding_size,
            margin=margin,
            scale=scale,
            **kwargs,
        )
        self.sub_centers = sub_centers
        self.num_classes = num_classes

    def get_cosine(self, embeddings):
        cosine = self.distance(embeddings, self._class_weights(embeddings).t())
        return cosine.view(-1, self.num_classes, self.sub_centers).max(dim=2).values

    def get_outliers(self, embeddings, labels, threshold=75, return_dominant_centers=True):
        """Samples far from their class's dominant sub-center.

        For each class present in ``labels``, the dominant sub-center is the one that most of
        the class's samples are closest to (ties: the lowest index). A sample is an outlier
        when its angle to that sub-center exceeds ``threshold`` degrees.

        Returns ``(outliers, dominant_centers)`` - always both, as the reference does
        (``return_dominant_centers`` has no effect): ``outliers`` holds batch indices (long,
        grouped by class, ascending within a class) and ``dominant_centers`` is
        ``(embedding_size, num_classes)`` with the dominant column of each present class
        (zeros for absent classes).
        """
        c_f.check_shapes(embeddings, labels)
        self.check_class_inputs(embeddings, labels)
        dtype, device = embeddings.dtype, embeddings.device
        self.cast_types(dtype, device)
        labels = c_f.to_device(labels, embeddings).long()
        num_classes, k = self.num_classes, self.sub_centers
        with torch.no_grad():
            x = embeddings.to(accumulation_dtype(dtype))
            all_cos = self.distance(x, self._class_weights(x).t()).view(-1, num_classes, k)
            own_cos = all_cos[torch.arange(len(labels), device=device), labels]  # (N, K)
            nearest = own_cos.argmax(dim=1)
            votes = torch.zeros(num_classes * k, dtype=torch.long, device=device)
            votes.index_add_(0, labels * k + nearest, torch.ones_like(labels))
            dominant = votes.view(num_classes, k).argmax(dim=1)  # (C,)

            present = torch.zeros(num_classes, dtype=torch.bool, device=device)
            present[labels] = True
            columns = torch.arange(num_classes, device=device) * k + dominant
            dominant_centers = self.W[:, columns] * present.to(self.W.dtype)

            own_dominant = own_cos.gather(1, dominant[labels].unsqueeze(1)).squeeze(1)
            is_outlier = own_dominant < math.cos(math.radians(threshold))
            candidates = torch.nonzero(is_outlier).flatten()
            order = torch.argsort(labels[candidates], stable=True)
            outliers = candidates[order]
        return outliers, dominant_centers
