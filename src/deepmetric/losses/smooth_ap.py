"""Smooth-AP loss (Brown, Xie, Kalogeiton & Zisserman, "Smooth-AP: Smoothing the Path Towards
Large-Scale Image Retrieval", ECCV 2020)."""

import torch

from ..distances import CosineSimilarity
from ..ops.sigmoid_ranks import sigmoid_rank_sums
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction


class SmoothAPLoss(BaseMetricLossFunction):
    """One minus a smoothed average precision per query, ranks counted with
    ``sigma(x) = sigmoid(x / temperature)`` over cosine similarities ``S``:

        rank_all(q, i) = 1 + sum_{j != i} sigma(S_qj - S_qi)        (j over the whole batch)
        rank_pos(q, i) = 1 + sum_{j != i, j in B(q)} sigma(S_qj - S_qi)
        AP_q = (1 / G) sum_{i in B(q)} rank_pos(q, i) / rank_all(q, i),   loss_q = (1 - AP_q) w_q

    Every label must occur equally often (``MPerClassSampler`` builds such batches). As in the
    reference, the positive group ``B(q)`` is **not** read from the labels: with ``G`` distinct
    labels, the batch is cut into consecutive blocks of ``G`` rows and ``B(q)`` is ``q``'s block
    (``q`` included). That matches the labels only for batches laid out that way.

    ``w_q`` are miner weights (all ones without a miner). The loss dict entry is named
    ``"ap_loss"`` (element, indices ``arange(N)``) and is always float32.

    The ``N x G x N`` sigmoid terms are computed in blocks of queries and recomputed in the
    backward pass, so memory does not grow with ``N^3``.

    Args:
        temperature: sigmoid temperature; smaller is closer to the true (step) rank.
    """

    # Its positives are blocks of the batch (as in the reference), not decided by labels.
    accepts_label_relation = False

    def __init__(self, temperature=0.01, **kwargs):
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.temperature = temperature

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        _, counts = torch.unique(labels, return_counts=True)
        if bool((counts != counts[0]).any()):
            raise ValueError(
                "SmoothAPLoss needs every class to have the same number of elements in the batch; "
                f"got class sizes {counts.tolist()}. Build batches with "
                "samplers.MPerClassSampler (batch_size a multiple of m)."
            )
        batch_size = len(embeddings)
        group_size = len(counts)
        sims = self.distance(embeddings)
        if sims.dtype == torch.float16:
            sims = sims.float()  # rank sums over N terms need float32 accumulation
        group = torch.arange(batch_size, device=embeddings.device) // group_size
        pivots = group.unsqueeze(1) * group_size + torch.arange(group_size, device=embeddings.device)
        same_group = group.unsqueeze(1) == group.unsqueeze(0)
        sums = sigmoid_rank_sums(sims, pivots, [None, same_group], self.temperature)
        # each sum includes j = i, whose term is sigmoid(0) = 1/2, so "1 + sum over j != i" is
        # "sum + 1/2"
        rank_all, rank_pos = sums[0] + 0.5, sums[1] + 0.5
        ap = (rank_pos / rank_all).sum(dim=1).float() / group_size
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=ap.dtype)
        loss = (1 - ap) * miner_weights
        return {
            "ap_loss": {
                "losses": loss,
                "indices": c_f.torch_arange_from_size(loss),
                "reduction_type": "element",
            }
        }
