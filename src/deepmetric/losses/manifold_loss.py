"""Manifold loss (Aziere & Todorovic, "Ensemble Deep Manifold Similarity Learning Using Hard
Proxies", CVPR 2019)."""

import math

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils.errors import require
from .base_metric_loss_function import BaseMetricLossFunction

# Rows are divided by max(norm, eps), as torch.nn.functional.cosine_similarity does.
_NORM_EPS = 1e-8


class ManifoldLoss(BaseMetricLossFunction):
    """Similarities propagated by a random walk over the batch and ``K`` learnable proxies.

    With ``Z`` = the ``N`` embeddings followed by the ``K`` proxies:

    1. ``S = exp(clamp(sim(Z, Z), min=0) / 0.5)`` with a zero diagonal;
    2. ``S_bar = D^{-1/2} S D^{-1/2}``, ``D`` = diagonal of row sums;
    3. ``F = (1 - alpha) (I - alpha S_bar)^{-1}`` (the random walk's stationary similarity);
    4. intrinsic loss with ``A = F[:N, N:]`` and ``c_i`` the proxy of embedding ``i``:
       ``mean_i log(1 + sum_{k != c_i, A_ik - A_ic_i + margin >= 0} exp(A_ik - A_ic_i + margin))``;
    5. context loss: the same with ``B_ik = cos(F[i], F[N + k])`` (whole rows of ``F``);
    6. ``loss = loss_int + lambdaC * loss_ctx`` (``lambdaC = inf``: context loss only).

    Takes no labels: ``indices_tuple``, if given, is a length-``N`` long tensor assigning each
    embedding to a proxy; otherwise every proxy gets at least one random embedding (``N >= K``).

    Args:
        l: embedding size.
        K: number of proxies (parameter ``proxies`` of shape ``(K, l)``, standard normal).
        lambdaC: weight of the context loss, ``>= 0``.
        alpha: random-walk parameter in ``(0, 1)``: how much similarity flows to neighbours.
        margin: margin of both losses.
    """

    accepts_label_relation = False  # it takes no labels

    def __init__(self, l, K=50, lambdaC=1.0, alpha=0.8, margin=5e-4, **kwargs):  # noqa: E741
        super().__init__(**kwargs)
        if lambdaC < 0:
            raise ValueError(
                f"ManifoldLoss: lambdaC must be non-negative, got lambdaC={lambdaC}"
            )
        self.K = K
        self.l = l  # noqa: E741
        self.proxies = torch.nn.Parameter(torch.randn(K, l))
        self.lambdaC = lambdaC
        self.alpha = alpha
        self.margin = margin
        self.add_to_recordable_attributes(
            list_of_names=["K", "l", "lambdaC", "alpha", "margin"], is_stat=False
        )

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        c_f.labels_not_supported(labels, ref_labels)
        require(
            embeddings.shape[1] == self.l,
            f"ManifoldLoss: embeddings must have width l={self.l}, got shape {tuple(embeddings.shape)}",
        )
        n = len(embeddings)
        proxy_of = self._proxy_assignment(indices_tuple, n, embeddings.device)
        nodes = torch.cat([embeddings, self.proxies.to(embeddings.device)], dim=0)
        propagated = self._propagated_similarity(nodes)
        rows = torch.arange(n, device=embeddings.device)
        loss_int = torch.zeros(1, device=embeddings.device, dtype=embeddings.dtype)
        if self.lambdaC != math.inf:
            loss_int = self._hinge_softplus(propagated[:n, n:], rows, proxy_of)
        unit = torch.nn.functional.normalize(propagated, dim=1, eps=_NORM_EPS)
        context = unit[:n] @ unit[n:].t()
        loss_ctx = self._hinge_softplus(context, rows, proxy_of)
        if self.lambdaC == math.inf:
            # The documented limit "context loss only" (the reference computes 0 + inf * ctx).
            loss = loss_int + loss_ctx
        else:
            loss = loss_int + self.lambdaC * loss_ctx
        return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    def _proxy_assignment(self, indices_tuple, n, device):
        if indices_tuple is None:
            if n < self.K:
                raise ValueError(
                    f"ManifoldLoss: without indices_tuple every one of the K={self.K} proxies needs an "
                    f"embedding, so the batch needs at least {self.K} rows, got {n}"
                )
            extra = torch.randint(0, self.K, (n - self.K,))
            assignment = torch.cat((torch.arange(self.K), extra))[torch.randperm(n)]
            return assignment.to(device)
        if not torch.is_tensor(indices_tuple) or indices_tuple.ndim != 1 or len(indices_tuple) != n:
            is_tensor = torch.is_tensor(indices_tuple)
            shape = tuple(indices_tuple.shape) if is_tensor else type(indices_tuple).__name__
            raise ValueError(
                "ManifoldLoss: indices_tuple must be a 1-D tensor with one proxy index per embedding "
                f"(length {n}), got {shape}"
            )
        if indices_tuple.dtype.is_floating_point:
            raise TypeError(f"ManifoldLoss: indices_tuple must hold integers, got {indices_tuple.dtype}")
        if len(indices_tuple) > 0 and (int(indices_tuple.min()) < 0 or int(indices_tuple.max()) >= self.K):
            raise ValueError(
                f"ManifoldLoss: proxy indices must lie in [0, K={self.K}), got values from "
                f"{int(indices_tuple.min())} to {int(indices_tuple.max())}"
            )
        return indices_tuple.to(device)

    def _propagated_similarity(self, nodes):
        """``F = (1 - alpha) (I - alpha D^{-1/2} S D^{-1/2})^{-1}`` over all nodes."""
        affinity = torch.exp(self.distance(nodes, nodes).clamp(min=0) / 0.5)
        eye = torch.eye(len(nodes), dtype=torch.bool, device=nodes.device)
        affinity = affinity.masked_fill(eye, 0)
        inv_sqrt_degree = affinity.sum(dim=1).pow(-0.5)
        normalized = inv_sqrt_degree.unsqueeze(1) * affinity * inv_sqrt_degree.unsqueeze(0)
        system = eye.to(normalized.dtype) - self.alpha * normalized
        # No half-precision inverse: invert in float32 and cast back.
        inverse = torch.linalg.inv(system.to(accumulation_dtype(system.dtype))).to(system.dtype)
        return (1 - self.alpha) * inverse

    def _hinge_softplus(self, scores, rows, proxy_of):
        """``mean_i log(1 + sum_k exp(s_ik - s_ic_i + margin))`` over ``k != c_i`` with a
        non-negative exponent (other proxies are ignored)."""
        relative = scores - scores[rows, proxy_of].unsqueeze(1) + self.margin
        keep = relative >= 0
        keep[rows, proxy_of] = False
        zero = torch.zeros((), dtype=relative.dtype, device=relative.device)
        # Exponents are masked before exp so that no ignored cell can overflow into a NaN gradient.
        terms = torch.where(keep, torch.exp(torch.where(keep, relative, zero)), zero)
        return torch.log1p(terms.sum(dim=1)).mean()
