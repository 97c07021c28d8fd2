"""Neighbourhood Components Analysis loss (Goldberger, Roweis, Hinton & Salakhutdinov,
"Neighbourhood Components Analysis", NIPS 2004)."""

import torch

from ..distances import LpDistance
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_metric_loss_function import BaseMetricLossFunction


class NCALoss(BaseMetricLossFunction):
    """Each element picks a neighbour from the reference set with softmax probabilities of
    its scaled similarity; the loss is the negative log-probability of picking one of its own
    class:

        p_ij = softmax_j(softmax_scale * s_ij),   loss_i = -log(sum_{j: y'_j = y_i} p_ij) * w_i

    with ``s = -distance`` for distances (the default is squared L2) and ``s = similarity``
    otherwise. Without ``ref_emb`` the reference set is the batch minus the element itself.
    ``w_i`` are miner weights (how often ``i`` occurs in ``indices_tuple``, divided by the
    largest count; all ones without a miner). Only elements with a non-zero probability of
    picking a positive are kept (``"loss"``: element, indices = kept rows); when no row is
    kept the loss is zero.

    Args:
        softmax_scale: multiplies the similarities before the softmax (an inverse temperature).
    """

    # indices_tuple only weights rows by how often they occur in it
    indices_tuple_is_structured = False

    def __init__(self, softmax_scale=1, **kwargs):
        super().__init__(**kwargs)
        self.softmax_scale = softmax_scale
        self.add_to_recordable_attributes(list_of_names=["softmax_scale"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if len(embeddings) <= 1:
            return self.zero_losses()
        c_f.labels_required(labels)
        return self.nca_computation(embeddings, ref_emb, labels, ref_labels, indices_tuple)

    def nca_computation(self, query, reference, query_labels, reference_labels, indices_tuple):
        """The NCA loss dict of ``query`` against ``reference`` (ProxyNCALoss passes proxies)."""
        dtype = query.dtype
        same_set = query is reference
        miner_weights = lmu.convert_to_weights(
            indices_tuple, query_labels, dtype=dtype, using_ref=not same_set
        )
        mat = self.distance(query, reference)
        mat_dtype = mat.dtype  # (the query's, or wider when the reference set is wider)
        if mat_dtype == torch.float16:
            mat = mat.float()  # float16 logits would lose most of their precision in exp
        # similarities as they are, distances negated, folded into one multiply
        logits = mat * (self.softmax_scale if self.distance.is_inverted else -self.softmax_scale)
        positive = lmu.related_labels(query_labels, reference_labels, self.label_relation)
        if same_set:
            logits.fill_diagonal_(c_f.neg_inf(logits.dtype))
        # One softmax (one exponential per entry, none in the backward pass) is the cheapest
        # exact form; a probability that underflows to 0 drops its row, as in the reference.
        q = torch.sum(torch.where(positive, torch.softmax(logits, dim=1), 0), dim=1)
        kept = q != 0
        if not bool(kept.any()):
            return self.zero_losses()
        loss = -torch.log(q[kept]).to(mat_dtype) * miner_weights[kept]
        return {
            "loss": {
                "losses": loss,
                "indices": c_f.torch_arange_from_size(query)[kept],
                "reduction_type": "element",
            }
        }

    def get_default_distance(self):
        return LpDistance(power=2)
