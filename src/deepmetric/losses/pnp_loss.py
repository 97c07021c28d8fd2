"""PNP loss (Li, Zhao, Chen, Huang, Gao & Xiang, "Rethinking the Optimization of Average
Precision: Only Penalizing Negative Instances before Positive Ones is Enough", AAAI 2022)."""

import torch

from ..distances import CosineSimilarity
from ..ops.sigmoid_ranks import sigmoid_rank_sums
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction

# The reference clamps the sigmoid argument to this range (gradient 0 outside).
_SIGMOID_CLAMP = 50


class PNPLoss(BaseMetricLossFunction):
    """Penalises, for each positive, the negatives ranked above it. With cosine similarities
    ``s`` and ``sigma(x) = sigmoid(clamp(x / anneal, -50, 50))``:

        R(q, i) = sum_{j in N_q} sigma(s_qj - s_qi)       (smoothed count of negatives above i)
        loss = mean_q (1 / |P_q|) sum_{i in P_q} f(R(q, i))

    over queries ``q`` with at least one other element of their class; ``P_q`` counts ``q``
    itself as a positive. The variant picks ``f``: ``"O"``: ``R``; ``"Ds"``: ``log(1 + R)``;
    ``"Dq"``: ``(1 + R)^-alpha`` (and the loss is ``1 - mean``); ``"Iu"``:
    ``(1 + R) log(1 + R)``; ``"Ib"``: ``(b R - log(1 + b R)) / b^2``.

    ``"loss"``: already reduced, indices = the queries used. The ``queries x positives x N``
    sigmoid terms are computed in blocks of queries and recomputed in the backward pass.

    Args:
        b: the ``Ib`` variant's parameter.
        alpha: the ``Dq`` variant's exponent.
        anneal: sigmoid temperature.
        variant: one of ``VARIANTS``.
    """

    VARIANTS = ["Ds", "Dq", "Iu", "Ib", "O"]

    def __init__(self, b=2, alpha=1, anneal=0.01, variant="O", **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.b = b
        self.alpha = alpha
        self.anneal = anneal
        self.variant = variant
        if self.variant not in self.VARIANTS:
            raise ValueError(f"variant={variant} but must be one of {self.VARIANTS}")

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.indices_tuple_not_supported(indices_tuple)
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        same_label = lmu.related_labels(labels, labels, self.label_relation)
        if self.label_relation is not None or labels.ndim != 1:
            same_label = same_label.clone().fill_diagonal_(True)  # the query is its own positive
        num_pos = same_label.sum(dim=1)  # includes the query itself
        queries = torch.where(num_pos > 1)[0]
        if len(queries) == 0:
            return self.zero_losses()
        sims = self.distance(embeddings)
        if sims.dtype == torch.float16:
            sims = sims.float()  # counts over N negatives need float32 accumulation
        positives, valid = _padded_positives(same_label[queries])
        ranks = sigmoid_rank_sums(sims[queries], positives, [~same_label[queries]], self.anneal,
                                  clamp=_SIGMOID_CLAMP)[0]
        transformed = torch.where(valid, self._transform(ranks), 0)
        loss = torch.mean(transformed.sum(dim=1) / num_pos[queries])
        if self.variant == "Dq":
            loss = 1 - loss
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": queries,
                "reduction_type": "already_reduced",
            }
        }

    def _transform(self, ranks):
        if self.variant == "Ds":
            return torch.log(1 + ranks)
        if self.variant == "Dq":
            return 1 / (1 + ranks) ** self.alpha
        if self.variant == "Iu":
            return (1 + ranks) * torch.log(1 + ranks)
        if self.variant == "Ib":
            return 1 / self.b**2 * (self.b * ranks - torch.log(1 + self.b * ranks))
        return ranks

    def get_default_distance(self):
        return CosineSimilarity()


def _padded_positives(same_label):
    """Column indices of each row's positives, left-aligned in a ``(rows, max count)`` matrix,
    and the mask of real entries. Padding repeats a real positive so every value stays finite.
    """
    counts = same_label.sum(dim=1)
    width = int(counts.max())
    rows, cols = torch.where(same_label)
    slot = torch.cumsum(same_label, dim=1)[rows, cols] - 1
    positives = torch.zeros(same_label.shape[0], width, dtype=torch.long, device=same_label.device)
    positives[:, :] = cols[torch.cumsum(counts, 0) - counts].unsqueeze(1)  # each row's first positive
    positives[rows, slot] = cols
    valid = torch.arange(width, device=same_label.device).unsqueeze(0) < counts.unsqueeze(1)
    return positives, valid
