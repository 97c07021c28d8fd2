"""Signal-to-noise-ratio distance (Yuan et al., "Signal-to-Noise Ratio: A Robust Distance Metric
for Deep Metric Learning", CVPR 2019)."""

import torch

from .base_distance import BaseDistance


class SNRDistance(BaseDistance):
    """``mat[i, j] = Var(q_i - r_j) / Var(q_i)``, variances (unbiased) taken over the features.

    Computed without forming the ``(N, M, D)`` difference tensor, using
    ``Var(q - r) = Var(q) + Var(r) - 2 Cov(q, r)`` on centred rows.
    """

    def compute_mat(self, query_emb, ref_emb):
        dim = query_emb.shape[1]
        q = query_emb - query_emb.mean(dim=1, keepdim=True)
        r = ref_emb - ref_emb.mean(dim=1, keepdim=True)
        var_q = (q * q).sum(dim=1) / (dim - 1)
        var_r = (r * r).sum(dim=1) / (dim - 1)
        cov = q @ r.t() / (dim - 1)
        diff_var = (var_q.unsqueeze(1) + var_r.unsqueeze(0) - 2 * cov).clamp_min(0)
        return diff_var / var_q.unsqueeze(1)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.var(query_emb - ref_emb, dim=1) / torch.var(query_emb, dim=1)
