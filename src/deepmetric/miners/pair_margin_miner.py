"""Pair mining by margin thresholds."""

import torch

from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner


class PairMarginMiner(BaseMiner):
    """Keeps positive pairs farther than ``pos_margin`` and negative pairs closer than
    ``neg_margin`` (for similarities: positives with ``s < pos_margin``, negatives with
    ``s > neg_margin``). Both comparisons are strict.

    Statistics ``pos_pair_dist`` / ``neg_pair_dist``: the mean value over all positive /
    negative pairs before filtering (0 when there are none).
    """

    def __init__(self, pos_margin=0.2, neg_margin=0.8, **kwargs):
        super().__init__(**kwargs)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["pos_pair_dist", "neg_pair_dist"], is_stat=True
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        self.set_stats(mat, pos_mask, neg_mask)
        if self.distance.is_inverted:
            pos_mask &= mat < self.pos_margin
            neg_mask &= mat > self.neg_margin
        else:
            pos_mask &= mat > self.pos_margin
            neg_mask &= mat < self.neg_margin
        a1, p = torch.where(pos_mask)
        a2, n = torch.where(neg_mask)
        return a1, p, a2, n

    def set_stats(self, mat, pos_mask, neg_mask):
        if not self.collect_stats:
            return
        self.pos_pair_dist = _masked_mean(mat, pos_mask)
        self.neg_pair_dist = _masked_mean(mat, neg_mask)


def _masked_mean(mat, mask):
    # count_nonzero and where: a boolean sum, or a product with a boolean mask, is about ten
    # times slower on CPU
    count = int(torch.count_nonzero(mask))
    if count == 0:
        return 0
    return torch.where(mask, mat.double(), 0).sum().item() / count
