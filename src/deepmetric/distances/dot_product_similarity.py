"""Dot-product similarity (cosine similarity while embeddings are normalised, the default)."""

import torch

from .base_distance import BaseDistance
from .cosine_matrix import cosine_matrix


class DotProductSimilarity(BaseDistance):
    """``mat[i, j] = q_i . r_j``; a similarity (``is_inverted=True``).

    Embeddings are normalised by default, so ``DotProductSimilarity()`` equals cosine
    similarity; pass ``normalize_embeddings=False`` for raw dot products.
    """

    def __init__(self, **kwargs):
        super().__init__(is_inverted=True, **kwargs)

    def forward(self, query_emb, ref_emb=None):
        if not self._is_plain_cosine(query_emb, ref_emb):
            return super().forward(query_emb, ref_emb)
        self.reset_stats()
        self.check_shapes(query_emb, ref_emb)
        return cosine_matrix(query_emb, ref_emb)

    def _is_plain_cosine(self, query_emb, ref_emb):
        """True when this is unmodified cosine similarity of float32/float64 matrices without
        statistics: then one fused autograd node (``cosine_matrix``) computes it."""
        cls = type(self)
        return (
            self.normalize_embeddings
            and self.p == 2
            and self.power == 1
            and not self.collect_stats
            and cls.compute_mat is DotProductSimilarity.compute_mat
            and cls.normalize is BaseDistance.normalize
            and cls.maybe_normalize is BaseDistance.maybe_normalize
            and query_emb.dtype in (torch.float32, torch.float64)
            and (ref_emb is None or ref_emb.dtype == query_emb.dtype)
            and query_emb.ndim == 2
            and (ref_emb is None or ref_emb.ndim == 2)
        )

    def compute_mat(self, query_emb, ref_emb):
        # Transposing the last two dims also serves batched 3-D inputs.
        return torch.matmul(query_emb, ref_emb.transpose(-1, -2))

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.sum(query_emb * ref_emb, dim=1)
