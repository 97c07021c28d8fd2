"""Threshold-consistent margin loss (Zhang et al., "Threshold-Consistent Margin Loss for
Open-World Deep Metric Learning", ICLR 2024, https://arxiv.org/abs/2307.04047)."""

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import OutOfRangeError
from .base_metric_loss_function import BaseMetricLossFunction

# Rows are divided by max(norm, eps), as torch.nn.functional.cosine_similarity does.
_NORM_EPS = 1e-8


class ThresholdConsistentMarginLoss(BaseMetricLossFunction):
    """``loss = lambda_plus * pos + lambda_minus * neg`` with cosine similarities ``s``:

    * ``pos`` = mean of ``margin_plus - s`` over positive pairs with ``s <= margin_plus``;
    * ``neg`` = mean of ``s - margin_minus`` over negative pairs with ``s >= margin_minus``;

    each 0 when no pair qualifies. It penalises only the hard pairs near the decision
    threshold, so the threshold that separates positives from negatives varies less across
    classes; it is meant to be added to another loss as a regulariser.

    As in the reference, both members of every pair are rows of ``embeddings``: ``ref_emb`` is
    never read and ``ref_labels`` only decide which pairs exist (a pair index beyond the batch
    raises ``ValueError``). Requires ``CosineSimilarity`` (the default).

    Args:
        lambda_plus: weight of the positive term.
        lambda_minus: weight of the negative term.
        margin_plus: positive pairs with a similarity up to this are penalised.
        margin_minus: negative pairs with a similarity from this on are penalised.
    """

    def __init__(self, lambda_plus=1.0, lambda_minus=1.0, margin_plus=0.9, margin_minus=0.5, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.lambda_plus = lambda_plus
        self.lambda_minus = lambda_minus
        self.margin_plus = margin_plus
        self.margin_minus = margin_minus

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        dtype = embeddings.dtype
        # Half-precision sums over many pairs lose too much; accumulate in float32.
        rows = embeddings.to(accumulation_dtype(dtype))
        if indices_tuple is None:
            pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
            sim = self._cosine(rows, num_ref=pos_mask.shape[1])
            pos_pairs = neg_pairs = None
            pos_sims, neg_sims = sim, sim
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels, self.label_relation)
            largest = max([int(x.max()) + 1 for x in (p, n) if len(x) > 0], default=0)
            sim = self._cosine(rows, num_ref=largest)
            pos_pairs, neg_pairs = (a1, p), (a2, n)
            pos_sims, neg_sims = sim[a1, p], sim[a2, n]
            pos_mask = neg_mask = None
        pos_sims = self._exact_near(pos_sims, pos_mask, pos_pairs, self.margin_plus, embeddings)
        neg_sims = self._exact_near(neg_sims, neg_mask, neg_pairs, self.margin_minus, embeddings)
        pos_term = self._mean_violation(self.margin_plus - pos_sims, pos_mask)
        neg_term = self._mean_violation(neg_sims - self.margin_minus, neg_mask)
        loss = self.lambda_plus * pos_term + self.lambda_minus * neg_term
        if torch.is_tensor(loss):
            loss = loss.to(dtype)
        return {"loss": {"losses": loss, "indices": None, "reduction_type": "already_reduced"}}

    @staticmethod
    def _exact_near(sims, mask, pairs, margin, embeddings):
        """``sims`` with the pairs within rounding of ``margin`` recomputed exactly as the
        reference computes each pair (``F.cosine_similarity`` of the two rows), so that which
        pairs pass the margin is decided bit for bit the same; the gradient stays that of
        ``sims``. ``mask`` (or None) selects the pairs of a matrix ``sims``; ``pairs`` lists
        them (for a matrix) or gives the rows of each entry (for a vector)."""
        if embeddings.dtype not in (torch.float32, torch.float64) or sims.numel() == 0:
            return sims  # (half precision is computed in float32: no bitwise parity to keep)
        # The matrix product and the per-pair formula round differently, by at most a few
        # ulps per feature.
        tolerance = 8 * embeddings.shape[1] * torch.finfo(embeddings.dtype).eps
        near = (sims.detach() - margin).abs() <= tolerance
        if mask is not None:
            near &= mask
        where = torch.where(near)
        first, second = where if mask is not None else (pairs[0][where[0]], pairs[1][where[0]])
        if len(first) == 0:
            return sims
        exact = torch.nn.functional.cosine_similarity(
            embeddings[first].detach(), embeddings[second].detach()
        ).to(sims.dtype)
        exact_full = torch.zeros_like(sims).index_put(where, exact)
        # exact + 0 (the surrogate's value) is exact bit for bit; its gradient is that of sims.
        return torch.where(near, exact_full + (sims - sims.detach()), sims)

    @staticmethod
    def _cosine(embeddings, num_ref):
        """Cosine similarity of every row with the first ``num_ref`` rows of the same batch."""
        if num_ref > len(embeddings):
            raise OutOfRangeError(
                "ThresholdConsistentMarginLoss takes both members of each pair from embeddings "
                "(as the reference library does), so the indices in indices_tuple must be below "
                f"the batch size {len(embeddings)}; got a reference index up to {num_ref - 1} "
                "(ref_emb larger than the batch?)"
            )
        unit = torch.nn.functional.normalize(embeddings, dim=1, eps=_NORM_EPS)
        return unit @ unit[:num_ref].t()

    @staticmethod
    def _mean_violation(violation, mask):
        """Mean of the non-negative ``violation`` values (under ``mask``), or 0 if there are none."""
        kept = violation >= 0
        if mask is not None:
            kept = kept & mask
        count = int(torch.count_nonzero(kept))
        if count == 0:
            return 0
        zero = torch.zeros((), dtype=violation.dtype, device=violation.device)
        return torch.sum(torch.where(kept, violation, zero)) / count
