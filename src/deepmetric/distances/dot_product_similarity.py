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

    def compute_mat(self, query_emb, ref_emb):
        # Transposing the last two dims also serves batched 3-D inputs.
        return torch.matmul(query_emb, ref_emb.transpose(-1, -2))

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.sum(query_emb * ref_emb, dim=1)
