"""Dot-product similarity (cosine similarity while embeddings are normalised, the default)."""

import torch

from .base_distance import BaseDistance


class DotProductSimilarity(BaseDistance):
    """``mat[i, j] = q_i . r_j``; a similarity (``is_inverted=True``).

    Embeddings are normalised by default, so ``DotProductSimilarity()`` equals cosine
    similarity; pass ``normalize_embeddings=False`` for raw dot products.
    """

    def __init__(self, **kwargs):
        super().__init__(is_inverted=True, **kwargs)

    def is_plain_cosine(self, query_emb, ref_emb=None):
        """True when this computes exactly the cosine similarity of these inputs (normalised rows,
        power 1, nothing overridden, no statistics): fused code paths may then take over."""
        return self.power == 1 and self._unit_rows_fusable(query_emb, ref_emb, DotProductSimilarity)

    def forward(self, query_emb, ref_emb=None):
        if not self.is_plain_cosine(query_emb, ref_emb):
            return super().forward(query_emb, ref_emb)
        return self._fused_cosine(query_emb, ref_emb)

    def compute_mat(self, query_emb, ref_emb):
        # Transposing the last two dims also serves batched 3-D inputs.
        return torch.matmul(query_emb, ref_emb.transpose(-1, -2))

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.sum(query_emb * ref_emb, dim=1)
