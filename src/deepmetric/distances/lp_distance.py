"""Minkowski (Lp) distance; the default distance of the library."""

import torch

from ..utils.errors import require
from .base_distance import BaseDistance


class LpDistance(BaseDistance):
    """``mat[i, j] = ||q_i - r_j||_p`` (raised to ``power``).

    With the defaults (``p=2``, normalised rows) this is the Euclidean distance between unit
    vectors, in ``[0, 2]``; ``LpDistance(power=2)`` is squared Euclidean, in ``[0, 4]``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        require(not self.is_inverted, "LpDistance is a distance: is_inverted must be False")

    def is_plain_squared_euclidean_of_unit_rows(self, query_emb, ref_emb=None):
        """True when this computes exactly ``||q/|q| - r/|r| ||^2 = 2 - 2 cos`` for these inputs
        (normalised rows, p=2, power 2, nothing overridden, no statistics)."""
        return self.power == 2 and self._unit_rows_fusable(query_emb, ref_emb, LpDistance)

    def forward(self, query_emb, ref_emb=None):
        if not self.is_plain_squared_euclidean_of_unit_rows(query_emb, ref_emb):
            return super().forward(query_emb, ref_emb)
        # Squared Euclidean distance between unit rows: the values as computed below (bit for
        # bit), the gradient of 2 - 2 cos in closed form instead of backward passes through
        # normalize, cdist and the square.
        return self._fused_squared_distance(query_emb, ref_emb)

    def compute_mat(self, query_emb, ref_emb):
        if query_emb.dtype in (torch.float16, torch.bfloat16):
            # cdist has no half-precision kernels everywhere; compute in float32, cast back.
            mat = torch.cdist(query_emb.float(), ref_emb.float(), p=self.p)
            return mat.to(query_emb.dtype)
        return torch.cdist(query_emb, ref_emb, p=self.p)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.nn.functional.pairwise_distance(query_emb, ref_emb, p=self.p)
