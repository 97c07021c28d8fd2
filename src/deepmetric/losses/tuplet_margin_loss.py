"""Tuplet margin loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019)."""

import math

import torch

from ..distances import CosineSimilarity
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .generic_pair_loss import GenericPairLoss
from .masked_logsumexp import accumulation_dtype


class TupletMarginLoss(GenericPairLoss):
    """A softmax over each positive pair against all negative pairs of its anchor, with the
    positive's angle enlarged by a margin.

    For a positive pair ``k = (i, j)`` with cosine ``s_ij`` and the margin ``beta`` (radians):

        loss_k = log(1 + sum_{negative pairs (i, n)} exp(scale * (s_in - cos(acos(s_ij) - beta))))

    Args:
        margin: ``beta``, in degrees (stored in radians as ``self.margin``).
        scale: the inverse temperature ``s``.

    Because the negatives only enter through ``lse_i = log sum_n exp(scale * s_in)``, computed
    once per anchor, ``loss_k = softplus(lse_i - scale * cos(acos(s_ij) - beta))`` costs
    ``O(N M)`` instead of ``O(positive pairs x negative pairs)``.
    ``cos(acos(s) - beta)`` is evaluated as ``s cos(beta) + sqrt(1 - s^2) sin(beta)`` with ``s``
    clamped to ``[-1, 1]`` so rounding above 1 and identical embeddings give no NaN.
    """

    def __init__(self, margin=5.73, scale=64, **kwargs):
        super().__init__(mat_based_loss=False, **kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.margin = math.radians(margin)
        self.scale = scale
        self.add_to_recordable_attributes(list_of_names=["margin", "scale"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["avg_pos_angle", "avg_neg_angle"], is_stat=True)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        dtype = embeddings.dtype
        # Half precision is computed in float32: sqrt(1 - s^2) and exp(scale * ...) lose whole
        # percents in 16 bits. The terms are cast back.
        same_set = ref_emb is embeddings
        embeddings = embeddings.to(accumulation_dtype(dtype))
        ref_emb = embeddings if same_set else ref_emb.to(accumulation_dtype(ref_emb.dtype))
        if self.has_dense_pairs(labels, indices_tuple):
            found = self.positive_pairs_with_negatives(labels, ref_labels, indices_tuple)
            if found is None:
                return self.zero_losses()
            a1, p, pos_mask, neg_mask = found
            mat = self.distance(embeddings, ref_emb)
            scaled = (self.scale * mat).masked_fill(~neg_mask, c_f.neg_inf(mat.dtype))
            neg_lse = torch.logsumexp(scaled, dim=1)
            neg_values = (mat, neg_mask)
            neg_pairs = lambda: torch.where(neg_mask)  # noqa: E731 - listed only if needed
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
            if all(len(x) <= 1 for x in (a1, p, a2, n)) or len(a1) == 0 or len(a2) == 0:
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            neg_lse = _lse_per_anchor(self.scale * mat[a2, n], a2, embeddings.shape[0])
            neg_values = (mat[a2, n], None)
            neg_pairs = lambda: (a2, n)  # noqa: E731
        pos = mat[a1, p]
        self.set_stats(pos, *neg_values)
        z = neg_lse[a1] - self.scale * self._cos_with_margin(pos)
        losses = _log_one_plus_exp(z)
        if dtype in (torch.float16, torch.bfloat16):
            losses = losses.to(dtype)
        else:
            losses = self._zero_as_listed(losses, z, mat.detach(), a1, p, neg_pairs)
        return {"loss": {"losses": losses, "indices": (a1, p), "reduction_type": "pos_pair"}}

    def _zero_as_listed(self, losses, z, mat, a1, p, neg_pairs):
        """``losses`` with the terms whose sum of exponentials ``exp(z)`` lies near half an ulp
        of 1 zero exactly where the per-pair formula makes them zero (and ``softplus(z)``
        elsewhere).

        ``log(1 + sum)`` is exactly 0 when ``1 + sum`` rounds to 1, which for sums within a few
        percent of half an ulp depends on the order of the additions. For those few terms the
        per-pair computation is redone as the reference lays it out (one row over every listed
        negative pair, masked to the anchor's, and a zero appended), so which terms are zero is
        decided bit for bit the same."""
        half_ulp = math.log(torch.finfo(z.dtype).eps / 2)
        near = torch.where((z.detach() - half_ulp).abs() < 3)[0]
        if len(near) == 0:
            return losses
        a2, n = neg_pairs()
        pos = mat[a1[near], p[near]]
        pos = torch.cos(torch.acos(pos) - self.margin)
        inside = self.scale * (mat[a2, n].unsqueeze(0) - pos.unsqueeze(1))
        keep = a2.unsqueeze(0) == a1[near].unsqueeze(1)
        inside = inside.masked_fill(~keep, c_f.neg_inf(inside.dtype))
        inside = torch.cat([inside, inside.new_zeros(len(near), 1)], dim=1)
        listed_zero = torch.logsumexp(inside, dim=1) == 0
        is_near = torch.zeros_like(losses, dtype=torch.bool)
        is_near[near] = True
        vanishes = torch.zeros_like(is_near)
        vanishes[near] = listed_zero
        zero = torch.zeros((), dtype=losses.dtype, device=losses.device)
        decided = torch.where(vanishes, zero, torch.nn.functional.softplus(z))
        return torch.where(is_near, decided, losses)

    def _cos_with_margin(self, cos):
        cos = torch.clamp(cos, -1, 1)
        # The floor keeps d sqrt(1 - s^2) / ds finite when s = +-1 (it matters only at angles
        # below ~sqrt(eps)).
        sin = torch.sqrt(torch.clamp(1 - cos**2, min=torch.finfo(cos.dtype).eps))
        return cos * math.cos(self.margin) + sin * math.sin(self.margin)

    def set_stats(self, pos, neg, neg_mask):
        if not self.collect_stats:
            return
        with torch.no_grad():
            neg = neg[neg_mask] if neg_mask is not None else neg
            self.avg_pos_angle = math.degrees(torch.mean(torch.acos(torch.clamp(pos, -1, 1))).item())
            self.avg_neg_angle = math.degrees(torch.mean(torch.acos(torch.clamp(neg, -1, 1))).item())

    def get_default_distance(self):
        return CosineSimilarity()


def _log_one_plus_exp(z):
    """``log(1 + exp(z))`` (softplus), exactly 0 where ``1 + exp(z)`` rounds to 1, as the
    reference's ``log(1 + sum exp(...))`` is: which terms are zero (what AvgNonZeroReducer
    counts) is decided the same way."""
    with torch.no_grad():
        vanishes = (1 + torch.exp(z)) == 1
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    return torch.where(vanishes, zero, torch.nn.functional.softplus(z))


def _lse_per_anchor(values, anchors, num_anchors):
    """``log sum exp`` of ``values`` grouped by ``anchors``; a very negative finite value for
    anchors without any value (so their loss is exactly 0 with a zero, not NaN, gradient)."""
    floor = c_f.neg_inf(values.dtype)
    with torch.no_grad():
        peak = torch.full((num_anchors,), floor, dtype=values.dtype, device=values.device)
        peak = peak.scatter_reduce(0, anchors, values, reduce="amax")
    sums = torch.zeros_like(peak).index_add(0, anchors, torch.exp(values - peak[anchors]))
    present = sums > 0
    safe_sums = torch.where(present, sums, torch.ones_like(sums))
    return torch.where(present, peak + torch.log(safe_sums), floor)
