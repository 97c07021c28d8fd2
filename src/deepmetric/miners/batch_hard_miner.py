"""The hardest positive and hardest negative of every anchor."""

from .batch_easy_hard_miner import BatchEasyHardMiner


class BatchHardMiner(BatchEasyHardMiner):
    """One triplet per anchor: its least similar positive and most similar negative.

    (Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification", 2017.)
    Equals ``BatchEasyHardMiner(pos_strategy="hard", neg_strategy="hard")`` with the output
    as ``(a, p, n)``; anchors without a positive or without a negative give no triplet.
    """

    def __init__(self, **kwargs):
        super().__init__(pos_strategy=self.HARD, neg_strategy=self.HARD, **kwargs)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        a, p, _, n = super().mine(embeddings, labels, ref_emb, ref_labels)
        return a, p, n
