"""Minkowski (Lp) distance; the default distance of the library."""

import torch

from ..ops.dtypes import accumulation_dtype
from ..ops.squared_euclidean import euclidean, squared_euclidean
from ..utils.errors import require
from .base_distance import BaseDistance


class LpDistance(BaseDistance):
    """``mat[i, j] = ||q_i - r_j||_p`` (raised to ``power``).

    With the defaults (``p=2``, normalised rows) this is the Euclidean distance between unit
    vectors, in ``[0, 2]``; ``LpDistance(power=2)`` is squared Euclidean, in ``[0, 4]``, whose
    gradient is taken in closed form (``ops.squared_euclidean``; the same values).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        require(not self.is_inverted, "LpDistance is a distance: is_inverted must be False")

    def compute_powered_mat(self, query_emb, ref_emb):
        if self.p == 2 and self.power == 2:
            return squared_euclidean(query_emb, ref_emb)
        return super().compute_powered_mat(query_emb, ref_emb)

    def compute_mat(self, query_emb, ref_emb):
        if self.p == 2:
            return euclidean(query_emb, ref_emb)
        work = accumulation_dtype(query_emb.dtype)  # cdist has no half kernels everywhere
        return torch.cdist(query_emb.to(work), ref_emb.to(work), p=self.p).to(query_emb.dtype)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.nn.functional.pairwise_distance(query_emb, ref_emb, p=self.p)
