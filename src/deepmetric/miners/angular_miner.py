"""Triplet mining by the angle at the negative (angular loss geometry)."""

import math

import torch

from ..distances import LpDistance
from ..ops.blocked_triplets import positive_pair_blocks, select_triplets
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner

# Triplets whose angle lies this close (radians) to the threshold are recomputed exactly.
_RECHECK_BAND = 1e-3


class AngularMiner(BaseMiner):
    """Keeps triplets whose angle ``theta = atan(d_ap / (2 d_nc)) > angle`` (strict), where
    ``c = (a + p) / 2`` and the distances are taken between the raw (unnormalised) vectors
    (Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017).

    Requires ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the default). ``angle`` is
    given in degrees and recorded in radians. Statistics (degrees, over all triplets):
    ``average_angle``, ``min_angle``, ``max_angle``, ``std_of_angle``,
    ``average_angle_above_threshold``, ``average_angle_below_threshold``.

    The triplets are never all listed: ``d_nc`` comes from Gram matrices, block by block, and
    triplets within a hair of the threshold are recomputed with ``pairwise_distance`` so the
    selection matches the per-triplet formula exactly.
    """

    def __init__(self, angle=20, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)
        self.angle = math.radians(angle)
        self.add_to_recordable_attributes(name="angle", is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=[
                "average_angle",
                "average_angle_above_threshold",
                "average_angle_below_threshold",
                "min_angle",
                "max_angle",
                "std_of_angle",
            ],
            is_stat=True,
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        angles_of = self._angle_function(embeddings, ref_emb)
        if self.collect_stats:
            stats = _AngleStats(self.angle)
            for a, p in positive_pair_blocks(pos_mask):
                stats.add(angles_of(a, p), neg_mask[a])
            stats.write_to(self)
        # Compared in the embeddings' dtype, as the per-triplet formula is (the recomputed
        # angles near the threshold are exactly values of that dtype).
        dtype = embeddings.dtype
        return select_triplets(pos_mask, neg_mask, lambda a, p: angles_of(a, p).to(dtype) > self.angle)

    def _angle_function(self, embeddings, ref_emb):
        """``angles_of(a, p)`` -> ``(len(a), M)`` angles of the triplets ``(a, p, every n)``."""
        work = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
        q, r = embeddings.to(work), ref_emb.to(work)
        q_dot_r, r_dot_r = q @ r.T, r @ r.T
        r_sq = r_dot_r.diagonal()
        q_sq = (q * q).sum(dim=1)
        # The per-triplet formula in half precision is itself only good to a few of its ulps.
        band = max(_RECHECK_BAND, 32 * torch.finfo(embeddings.dtype).eps)

        def angles_of(a, p):
            d_ap = self.distance.pairwise_distance(embeddings[a], ref_emb[p]).to(work)
            # ||n - c||^2 = ||n||^2 - n.(a + p) + ||(a + p) / 2||^2
            c_sq = (q_sq[a] + r_sq[p] + 2 * q_dot_r[a, p]) / 4
            d_nc_sq = r_sq.unsqueeze(0) - q_dot_r[a] - r_dot_r[p] + c_sq.unsqueeze(1)
            d_nc = d_nc_sq.clamp(min=0).sqrt()
            theta = torch.atan(d_ap.unsqueeze(1) / (2 * d_nc))
            near = torch.where((theta - self.angle).abs() < band)
            if len(near[0]) > 0:
                exact = self._exact_angles(embeddings, ref_emb, a[near[0]], p[near[0]], near[1])
                theta[near] = exact.to(theta.dtype)
            return theta

        return angles_of

    def _exact_angles(self, embeddings, ref_emb, a, p, n):
        """The per-triplet formula, in the embeddings' dtype."""
        anchors, positives, negatives = embeddings[a], ref_emb[p], ref_emb[n]
        centers = (anchors + positives) / 2
        d_ap = self.distance.pairwise_distance(anchors, positives)
        d_nc = self.distance.pairwise_distance(negatives, centers)
        return torch.atan(d_ap / (2 * d_nc))


class _AngleStats:
    """Running sums of the angles of all triplets (degrees), for the recorded statistics."""

    def __init__(self, threshold):
        self.threshold = threshold
        self.count = self.total = self.total_sq = 0.0
        self.above_count = self.above_total = 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, theta, valid):
        values = torch.rad2deg(theta[valid].double())
        if values.numel() == 0:
            return
        above = theta[valid] > self.threshold
        self.count += values.numel()
        self.total += float(values.sum())
        self.total_sq += float((values * values).sum())
        self.above_count += float(above.sum())
        self.above_total += float(values[above].sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def write_to(self, miner):
        if self.count == 0:
            return
        miner.average_angle = self.total / self.count
        miner.min_angle, miner.max_angle = self.low, self.high
        if self.count > 1:
            variance = (self.total_sq - self.total**2 / self.count) / (self.count - 1)
            miner.std_of_angle = math.sqrt(max(variance, 0.0))
        else:
            miner.std_of_angle = math.nan
        if self.above_count > 0:
            miner.average_angle_above_threshold = self.above_total / self.above_count
        below_count = self.count - self.above_count
        if below_count > 0:
            miner.average_angle_below_threshold = (self.total - self.above_total) / below_count
