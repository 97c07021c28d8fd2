"""NT-Xent / InfoNCE loss (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations" (SimCLR), ICML 2020; van den Oord et al., "Representation Learning with
Contrastive Predictive Coding", 2018; He et al., "Momentum Contrast" (MoCo), CVPR 2020)."""

import math

import torch

from ..distances import CosineSimilarity
from ..ops.dtypes import accumulation_dtype
from ..ops.masked_logsumexp import grouped_logsumexp, masked_logsumexp
from ..ops.tiled_logsumexp import tiled_logsumexp
from ..utils import common_functions as c_f
from ._tiled_pairs import TiledLabelPairs, check_tile_size, paired_values
from .generic_pair_loss import GenericPairLoss


class NTXentLoss(GenericPairLoss):
    """Softmax cross-entropy of each positive pair against the negatives of its anchor.

    For a positive pair ``(i, j)`` and the negatives ``N_i`` of anchor ``i``::

        loss_ij = -log( exp(s_ij / t) / (exp(s_ij / t) + sum_{k in N_i} exp(s_ik / t)) )

    (``s`` is negated for a distance.) Each positive pair is its own term, so an anchor with
    several positives contributes several terms; anchors without positives contribute none.

    Args:
        temperature: ``t``; MoCo uses 0.07, SimCLR 0.5.
        tile_size: None (default) for the dense path; a positive int computes the negatives'
            log-sum-exp ``tile_size`` anchor rows at a time, recomputing each tile in the
            backward pass, so memory grows as ``O(tile_size x M + N x D)`` instead of
            ``O(N x M)`` (used when the pairs come from labels, without an ``indices_tuple``).
            Values and gradients equal the dense path's up to rounding.

    Only the ``N x M`` matrix is used: the negatives' log-sum-exp is taken once per anchor (a
    masked row reduction with labels, a grouped reduction over a miner's negative pairs), so
    memory does not grow with (positive pairs x negative pairs).
    """

    def __init__(self, temperature=0.07, tile_size=None, **kwargs):
        super().__init__(mat_based_loss=False, **kwargs)
        self.temperature = temperature
        self.tile_size = check_tile_size(type(self).__name__, tile_size)
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if self.tile_size is None or indices_tuple is not None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        return self.tiled_loss(embeddings, labels, ref_emb, ref_labels)

    def tiled_loss(self, embeddings, labels, ref_emb, ref_labels):
        """The dense path's loss of every label pair, a tile of anchors at a time."""
        pairs = TiledLabelPairs(labels, ref_labels, self.label_relation, self.tile_size)
        a1, p, _, num_neg = pairs.summary()
        # The dense path's zero cases: at most one pair of each kind, or nothing to contrast.
        if (len(a1) <= 1 and num_neg <= 1) or len(a1) == 0 or num_neg == 0:
            return self.zero_losses()

        def logits(query_rows, ref):
            return self._logits(self.distance(query_rows, ref))

        neg_lse = tiled_logsumexp(
            logits, embeddings, ref_emb, keep=lambda s, e: pairs.masks(s, e)[1], tile_size=self.tile_size
        )
        pos_values = paired_values(self.distance, embeddings[a1], ref_emb[p], self.tile_size)
        return self._pair_losses(self._logits(pos_values), neg_lse[a1], a1, p, pos_values.dtype)

    def masked_pair_loss(self, mat, masks):
        found = masks.positive_pairs_if_any_negative()
        if found is None:
            return self.zero_losses()
        a1, p = found
        logits = self._logits(mat)
        neg_lse = masked_logsumexp(logits, masks.neg, empty=None)
        return self._pair_losses(logits[a1, p], neg_lse[a1], a1, p, mat.dtype)

    def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
        a1, p, a2, _ = indices_tuple
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        num_anchors = int(torch.maximum(a1.max(), a2.max())) + 1
        neg_lse, _ = grouped_logsumexp(self._logits(neg_pairs), a2, num_anchors)
        return self._pair_losses(self._logits(pos_pairs), neg_lse[a1], a1, p, pos_pairs.dtype)

    def _logits(self, values):
        values = values.to(accumulation_dtype(values.dtype))
        if not self.distance.is_inverted:
            values = -values
        return values / self.temperature

    def _pair_losses(self, pos_logits, neg_lse, a1, p, dtype):
        # An anchor without negatives has neg_lse at the finite sentinel: its ratio is 1, loss 0.
        # log(e^pos / (e^pos + e^neg)) = -log(1 + e^(neg - pos)): no cancellation when the ratio is near 1.
        log_ratio = -torch.logaddexp(torch.zeros_like(pos_logits), neg_lse - pos_logits)
        # -log(ratio + tiny) as in the reference, with tiny of the float32 accumulation (the
        # reference adds float16's tiny in float16, which caps each term near 9.7), written as a
        # logaddexp so that ratios close to 1 keep their precision.
        log_tiny = torch.full_like(log_ratio, math.log(c_f.small_val(pos_logits.dtype)))
        losses = -torch.logaddexp(log_ratio, log_tiny)
        return {"loss": {"losses": losses.to(dtype), "indices": (a1, p), "reduction_type": "pos_pair"}}

    def get_default_distance(self):
        return CosineSimilarity()
