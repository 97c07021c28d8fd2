"""Hard-aware deeply cascaded mining: keep the hardest fraction of the pairs."""

import math

import torch

from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner


class HDCMiner(BaseMiner):
    """Keeps the ``ceil(filter_percentage * count)`` hardest positive pairs and, separately,
    negative pairs, ordered from hardest (Yuan et al., "Hard-Aware Deeply Cascaded Embedding",
    ICCV 2017).

    Stateful, for cascades: the pairs to filter are all pairs of the batch, unless a pool was
    given with ``set_idx_externally``; that pool persists, and is filtered again on every call,
    until ``reset_idx()``. The filtered pairs are stored on the miner (``a1, p, a2, n``).
    """

    def __init__(self, filter_percentage=0.5, **kwargs):
        super().__init__(**kwargs)
        self.filter_percentage = filter_percentage
        self.add_to_recordable_attributes(name="filter_percentage", is_stat=False)
        self.reset_idx()

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        self.set_idx(labels, ref_labels)
        for name, (anchors, others) in (("pos", (self.a1, self.p)), ("neg", (self.a2, self.n))):
            if len(anchors) == 0:
                continue
            values = mat[anchors, others]
            k = min(len(values), math.ceil(self.filter_percentage * len(values)))
            _, idx = torch.topk(values, k=k, largest=self.should_select_largest(name))
            self.filter_original_indices(name, idx)
        return self.a1, self.p, self.a2, self.n

    def should_select_largest(self, name):
        """Hard positives are far (large distance), hard negatives close; flipped for similarities."""
        return (name == "pos") != bool(self.distance.is_inverted)

    def set_idx(self, labels, ref_labels):
        if not self.was_set_externally:
            self.a1, self.p, self.a2, self.n = lmu.get_all_pairs_indices(
                labels, ref_labels, self.label_relation
            )

    def set_idx_externally(self, external_indices_tuple, labels):
        self.a1, self.p, self.a2, self.n = lmu.convert_to_pairs(
            external_indices_tuple, labels, relation=self.label_relation
        )
        self.was_set_externally = True

    def reset_idx(self):
        self.a1, self.p, self.a2, self.n = None, None, None, None
        self.was_set_externally = False

    def filter_original_indices(self, name, idx):
        if name == "pos":
            self.a1, self.p = self.a1[idx], self.p[idx]
        else:
            self.a2, self.n = self.a2[idx], self.n[idx]
