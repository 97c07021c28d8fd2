"""VICReg (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022, https://arxiv.org/abs/2105.04906)."""

import torch

from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils.errors import ShapeError
from .base_metric_loss_function import BaseMetricLossFunction


class VICRegLoss(BaseMetricLossFunction):
    """Invariance, variance and covariance terms between two views ``Z`` (``embeddings``) and
    ``Z'`` (``ref_emb``) of the same ``N`` inputs, both ``(N, D)``:

        invariance_i   = invariance_lambda * mean_d (Z_id - Z'_id)^2                 (per sample)
        variance_loss1 = variance_mu * [1 - sqrt(Var(Z_:d) + eps)]+ / 2              (per dimension)
        variance_loss2 = the same for Z'
        covariance     = covariance_v * (sum_{d != e} C(Z)_de^2 + sum_{d != e} C(Z')_de^2) / D

    with unbiased variances and ``C(Z) = Zc^T Zc / (N - 1)`` of the centred views. Each
    sub-loss is reduced (mean by default) and the four are summed. Call as
    ``loss(embeddings, ref_emb=other_view)``; labels, ``indices_tuple``, a distance and an
    embedding regularizer are not supported. With a batch of one sample the spread is taken
    as zero (the reference returns NaN).
    """

    accepts_label_relation = False  # it takes no labels

    def __init__(self, invariance_lambda=25, variance_mu=25, covariance_v=1, eps=1e-4, **kwargs):
        if "distance" in kwargs:
            raise ValueError("VICRegLoss cannot use a distance function (got distance=...)")
        if "embedding_regularizer" in kwargs:
            raise ValueError("VICRegLoss cannot use a regularizer (got embedding_regularizer=...)")
        super().__init__(**kwargs)
        self.invariance_lambda = invariance_lambda
        self.variance_mu = variance_mu
        self.covariance_v = covariance_v
        self.eps = eps

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.indices_tuple_not_supported(indices_tuple)
        c_f.labels_not_supported(labels, ref_labels)
        if ref_emb.shape != embeddings.shape:
            raise ShapeError(
                "VICRegLoss needs ref_emb (the second view) with the shape of embeddings: got "
                f"embeddings {tuple(embeddings.shape)} and ref_emb {tuple(ref_emb.shape)}"
            )
        dtype = embeddings.dtype
        work = accumulation_dtype(dtype)
        z, z_ref = embeddings.to(work), ref_emb.to(work)
        invariance = self.invariance_lambda * self.invariance_loss(z, z_ref)
        variance1, variance2 = self.variance_loss(z, z_ref)
        covariance = self.covariance_v * self.covariance_loss(z, z_ref)
        dims = c_f.torch_arange_from_size(variance1)
        return {
            "invariance_loss": {
                "losses": invariance.to(dtype),
                "indices": c_f.torch_arange_from_size(invariance),
                "reduction_type": "element",
            },
            "variance_loss1": {
                "losses": (self.variance_mu * variance1).to(dtype),
                "indices": dims,
                "reduction_type": "element",
            },
            "variance_loss2": {
                "losses": (self.variance_mu * variance2).to(dtype),
                "indices": dims,
                "reduction_type": "element",
            },
            "covariance_loss": {
                "losses": covariance.to(dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            },
        }

    def invariance_loss(self, emb, ref_emb):
        return torch.mean((emb - ref_emb) ** 2, dim=1)

    def variance_loss(self, emb, ref_emb):
        # "/ 2" averages the two views' terms
        std_emb = torch.sqrt(self._variance(emb) + self.eps)
        std_ref = torch.sqrt(self._variance(ref_emb) + self.eps)
        return torch.relu(1 - std_emb) / 2, torch.relu(1 - std_ref) / 2

    def covariance_loss(self, emb, ref_emb):
        d = emb.shape[1]
        off_diagonal = ~torch.eye(d, dtype=torch.bool, device=emb.device)
        return sum(self._covariance(x)[off_diagonal].pow(2).sum() / d for x in (emb, ref_emb))

    @staticmethod
    def _variance(x):
        # Unbiased; a single sample has no spread (rather than 0 / 0).
        return x.var(dim=0) if x.shape[0] > 1 else torch.zeros_like(x[0])

    @staticmethod
    def _covariance(x):
        centred = x - x.mean(dim=0)
        return centred.T @ centred / max(x.shape[0] - 1, 1)

    def _sub_loss_names(self):
        return ["invariance_loss", "variance_loss1", "variance_loss2", "covariance_loss"]
