"""Minkowski (Lp) distance; the default distance of the library."""

import torch

from ..ops.squared_euclidean import squared_euclidean
from ..utils.errors import require
from .base_distance import BaseDistance


class LpDistance(BaseDistance):
    """``mat[i, j] = ||q_i - r_j||_p`` (raised to ``power``).

    With the defaults (``p=2``, normalised rows) this is the Euclidean distance between unit
    vectors, in ``[0, 2]``; ``LpDistance(power=2)`` is squared Euclidean, in ``[0, 4]``, computed
    directly as ``|q|^2 + |r|^2 - 2 q.r`` (clamped at 0) instead of squaring a square root.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        require(not self.is_inverted, "LpDistance is a distance: is_inverted must be False")

    def compute_powered_mat(self, query_emb, ref_emb):
        if self.p == 2 and self.power == 2:
            return squared_euclidean(query_emb, ref_emb)
        return super().compute_powered_mat(query_emb, ref_emb)

    def compute_mat(self, query_emb, ref_emb):
        if query_emb.dtype in (torch.float16, torch.bfloat16):
            # cdist has no half-precision kernels everywhere; compute in float32, cast back.
            mat = torch.cdist(query_emb.float(), ref_emb.float(), p=self.p)
            return mat.to(query_emb.dtype)
        return torch.cdist(query_emb, ref_emb, p=self.p)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.nn.functional.pairwise_distance(query_emb, ref_emb, p=self.p)
