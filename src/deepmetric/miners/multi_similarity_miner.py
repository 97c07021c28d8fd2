"""Multi-similarity pair mining."""

import torch

from ..distances import CosineSimilarity
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner, empty_indices


class MultiSimilarityMiner(BaseMiner):
    """Keeps the informative pairs of each anchor ``i`` (Wang et al., "Multi-Similarity Loss
    with General Pair Weighting for Deep Metric Learning", CVPR 2019).

    With similarities: positives with ``s_ij - epsilon < max_k s_ik`` over negatives ``k`` and
    negatives with ``s_ij + epsilon > min_k s_ik`` over positives ``k``. With distances:
    positives with ``d_ij + epsilon > min`` negative distance, negatives with
    ``d_ij - epsilon < max`` positive distance. An anchor without negatives keeps no positives
    and vice versa. Output: grouped by anchor (ascending), within an anchor by ascending value.
    """

    def __init__(self, epsilon=0.1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.add_to_recordable_attributes(name="epsilon", is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        if not bool(pos_mask.any()) or not bool(neg_mask.any()):
            return empty_indices(labels.device, 4)
        # As in the reference, positives are chosen among the cells that are not negative pairs
        # and negatives among those that are not positive pairs: a cell that is neither (the
        # diagonal when ref_emb comes without ref_labels) is a candidate for both.
        pos_candidates, neg_candidates = ~neg_mask, ~pos_mask
        if embeddings is ref_emb:
            # Also when the labels are separate objects, as in the reference.
            pos_candidates.fill_diagonal_(False)
            neg_candidates.fill_diagonal_(False)
        inf, neg_inf = c_f.pos_inf(mat.dtype), c_f.neg_inf(mat.dtype)
        inverted = self.distance.is_inverted
        # Non-candidates are pushed to the end that never passes the test below.
        pos_mat = mat.masked_fill(~pos_candidates, inf if inverted else neg_inf)
        neg_mat = mat.masked_fill(~neg_candidates, neg_inf if inverted else inf)
        pos_sorted, pos_order = torch.sort(pos_mat, dim=1)
        neg_sorted, neg_order = torch.sort(neg_mat, dim=1)
        if inverted:
            hard_pos = pos_sorted - self.epsilon < neg_sorted[:, -1:]
            hard_neg = neg_sorted + self.epsilon > pos_sorted[:, :1]
        else:
            hard_pos = pos_sorted + self.epsilon > neg_sorted[:, :1]
            hard_neg = neg_sorted - self.epsilon < pos_sorted[:, -1:]
        a1, p_rank = torch.where(hard_pos)
        a2, n_rank = torch.where(hard_neg)
        return a1, pos_order[a1, p_rank], a2, neg_order[a2, n_rank]
