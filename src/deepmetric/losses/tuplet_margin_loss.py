"""Tuplet margin loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019)."""

import math

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import grouped_logsumexp
from ..utils import common_functions as c_f
from .generic_pair_loss import GenericPairLoss


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
        # Half precision is computed in float32: sqrt(1 - s^2) and exp(scale * ...) lose whole
        # percents in 16 bits. The terms are cast back.
        dtype = embeddings.dtype
        same_set = ref_emb is embeddings
        embeddings = embeddings.to(accumulation_dtype(dtype))
        ref_emb = embeddings if same_set else ref_emb.to(accumulation_dtype(ref_emb.dtype))
        loss_dict = super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        entry = loss_dict["loss"]
        if torch.is_tensor(entry["losses"]):
            entry["losses"] = entry["losses"].to(dtype)
        return loss_dict

    def masked_pair_loss(self, mat, masks):
        found = masks.positive_pairs_if_any_negative()
        if found is None:
            return self.zero_losses()
        a1, p = found
        scaled = (self.scale * mat).masked_fill(~masks.neg, c_f.neg_inf(mat.dtype))
        neg_lse = torch.logsumexp(scaled, dim=1)
        if self.collect_stats:  # (the negatives' listing is only needed for the statistics)
            self.set_stats(mat[a1, p], mat[masks.neg])

        def negatives():  # listed only for the few terms near exactly zero
            a2, n = torch.where(masks.neg)
            return a2, mat.detach()[a2, n]

        return self._pair_losses(mat[a1, p], neg_lse[a1], a1, p, negatives)

    def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
        a1, p, a2, n = indices_tuple
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        neg_lse, _ = grouped_logsumexp(self.scale * neg_pairs, a2, int(max(a1.max(), a2.max())) + 1)
        self.set_stats(pos_pairs, neg_pairs)
        return self._pair_losses(pos_pairs, neg_lse[a1], a1, p, lambda: (a2, neg_pairs.detach()))

    def _pair_losses(self, pos, neg_lse, a1, p, negatives):
        z = neg_lse - self.scale * self._cos_with_margin(pos)
        losses = self._zero_as_listed(_log_one_plus_exp(z), z, pos.detach(), a1, negatives)
        return {"loss": {"losses": losses, "indices": (a1, p), "reduction_type": "pos_pair"}}

    def _zero_as_listed(self, losses, z, pos, a1, negatives):
        """``losses`` with the terms whose sum of exponentials ``exp(z)`` lies near half an ulp
        of 1 zero exactly where the per-pair formula makes them zero (and ``softplus(z)``
        elsewhere).

        ``log(1 + sum)`` is exactly 0 when ``1 + sum`` rounds to 1, which for sums within a few
        percent of half an ulp depends on the order of the additions. For those few terms the
        per-pair computation is redone as the reference lays it out (one row over every listed
        negative pair, masked to the anchor's, and a zero appended), so which terms are zero is
        decided bit for bit the same. ``negatives()`` lists ``(anchor, value)`` of every
        negative pair."""
        half_ulp = math.log(torch.finfo(z.dtype).eps / 2)
        near = torch.where((z.detach() - half_ulp).abs() < 3)[0]
        if len(near) == 0:
            return losses
        a2, neg_values = negatives()
        pos = torch.cos(torch.acos(pos[near]) - self.margin)
        inside = self.scale * (neg_values.unsqueeze(0) - pos.unsqueeze(1))
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

    def set_stats(self, pos, neg):
        if not self.collect_stats:
            return
        with torch.no_grad():
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
