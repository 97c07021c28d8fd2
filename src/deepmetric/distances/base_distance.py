"""The distance interface: query ``(N, D)`` and reference ``(M, D)`` embeddings -> ``(N, M)`` matrix."""

import torch

from ..ops.unit_rows import l2_normalize_rows
from ..utils.errors import ShapeError
from ..utils.module_with_records import ModuleWithRecords


class BaseDistance(ModuleWithRecords):
    """Base of all distances and similarities.

    Args:
        normalize_embeddings: L``p``-normalise every row before ``compute_mat``.
        p: norm order, used for normalisation and by :class:`LpDistance` as its order.
        power: raise every matrix entry to this power (``LpDistance(power=2)`` is squared L2).
        is_inverted: ``False`` when small means close (distances), ``True`` when large means
            close (similarities). Losses adapt through :meth:`margin`, :meth:`smallest_dist` and
            :meth:`largest_dist`.

    Subclasses implement ``compute_mat(query, ref)`` -> ``(N, M)`` and
    ``pairwise_distance(query, ref)`` -> ``(N,)`` (row ``i`` with row ``i``; no normalisation,
    no power).
    """

    def __init__(
        self, collect_stats=None, normalize_embeddings=True, p=2, power=1, is_inverted=False
    ):
        super().__init__(collect_stats=collect_stats)
        self.normalize_embeddings = normalize_embeddings
        self.p = p
        self.power = power
        self.is_inverted = is_inverted
        self.add_to_recordable_attributes(list_of_names=["p", "power"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=[
                "initial_avg_query_norm",
                "initial_avg_ref_norm",
                "final_avg_query_norm",
                "final_avg_ref_norm",
            ],
            is_stat=True,
        )

    def forward(self, query_emb, ref_emb=None):
        self.reset_stats()
        self.check_shapes(query_emb, ref_emb)
        query_emb, ref_emb = self.common_dtype(query_emb, ref_emb)
        query_emb_normalized = self.maybe_normalize(query_emb)
        if ref_emb is None:
            ref_emb = query_emb
            ref_emb_normalized = query_emb_normalized
        else:
            ref_emb_normalized = self.maybe_normalize(ref_emb)
        self.set_default_stats(query_emb, ref_emb, query_emb_normalized, ref_emb_normalized)
        mat = self.compute_powered_mat(query_emb_normalized, ref_emb_normalized)
        expected = (query_emb.shape[0], ref_emb.shape[0])
        if tuple(mat.shape) != expected:
            raise RuntimeError(
                f"{type(self).__name__}.compute_mat returned shape {tuple(mat.shape)}, "
                f"expected {expected}"
            )
        return mat

    @staticmethod
    def common_dtype(query_emb, ref_emb):
        """Both inputs in their promoted dtype (float32 with float64 -> float64), as torch's
        elementwise operations promote; matrix products would refuse mixed dtypes."""
        if ref_emb is None or ref_emb.dtype == query_emb.dtype:
            return query_emb, ref_emb
        dtype = torch.promote_types(query_emb.dtype, ref_emb.dtype)
        return query_emb.to(dtype), ref_emb.to(dtype)

    def compute_mat(self, query_emb, ref_emb):
        raise NotImplementedError

    def compute_powered_mat(self, query_emb, ref_emb):
        """``compute_mat(query_emb, ref_emb) ** power``; a distance with a direct formula for some
        power overrides this (see :class:`LpDistance`)."""
        mat = self.compute_mat(query_emb, ref_emb)
        return mat if self.power == 1 else mat**self.power

    def pairwise_distance(self, query_emb, ref_emb):
        raise NotImplementedError

    def smallest_dist(self, *args, **kwargs):
        """The value that means "closest": min for distances, max for similarities."""
        if self.is_inverted:
            return torch.max(*args, **kwargs)
        return torch.min(*args, **kwargs)

    def largest_dist(self, *args, **kwargs):
        """The value that means "farthest": max for distances, min for similarities."""
        if self.is_inverted:
            return torch.min(*args, **kwargs)
        return torch.max(*args, **kwargs)

    def margin(self, x, y):
        """``x - y`` for distances, ``y - x`` for similarities: positive when ``x`` is farther."""
        if self.is_inverted:
            return y - x
        return x - y

    def normalize(self, embeddings, dim=1, **kwargs):
        if self.p == 2 and dim in (1, -1) and not kwargs and embeddings.ndim == 2:
            # the same values as F.normalize, with a one-node backward pass
            return l2_normalize_rows(embeddings)
        return torch.nn.functional.normalize(embeddings, p=self.p, dim=dim, **kwargs)

    def maybe_normalize(self, embeddings, dim=1, **kwargs):
        if self.normalize_embeddings:
            return self.normalize(embeddings, dim=dim, **kwargs)
        return embeddings

    def get_norm(self, embeddings, dim=1, **kwargs):
        return torch.norm(embeddings, p=self.p, dim=dim, **kwargs)

    def set_default_stats(self, query_emb, ref_emb, query_emb_normalized, ref_emb_normalized):
        if not self.collect_stats:
            return
        with torch.no_grad():
            self.initial_avg_query_norm = torch.mean(self.get_norm(query_emb)).item()
            self.initial_avg_ref_norm = torch.mean(self.get_norm(ref_emb)).item()
            self.final_avg_query_norm = torch.mean(self.get_norm(query_emb_normalized)).item()
            self.final_avg_ref_norm = torch.mean(self.get_norm(ref_emb_normalized)).item()

    def check_shapes(self, query_emb, ref_emb):
        for name, x in (("query_emb", query_emb), ("ref_emb", ref_emb)):
            if x is not None and x.ndim != 2:
                raise ShapeError(
                    f"{name} must be 2-D of shape (batch_size, embedding_size), "
                    f"got shape {tuple(x.shape)}"
                )
        if ref_emb is not None and query_emb.shape[1] != ref_emb.shape[1]:
            raise ShapeError(
                "query and reference embeddings must have the same width: "
                f"query_emb has {query_emb.shape[1]} columns, ref_emb has {ref_emb.shape[1]}"
            )
