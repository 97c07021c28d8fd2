"""Cosine similarity."""

from .dot_product_similarity import DotProductSimilarity


class CosineSimilarity(DotProductSimilarity):
    """``mat[i, j] = cos(q_i, r_j)``: a dot product of L2-normalised rows (always normalised)."""

    def __init__(self, **kwargs):
        super().__init__(normalize_embeddings=True, **kwargs)
