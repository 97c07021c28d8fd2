import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_trainer import BaseTrainer


class TwoStreamMetricLoss(BaseTrainer):
    """Metric learning across two streams: dataset items are ``(anchor, posneg, label)``. Anchors
    come from the first stream; positives and negatives from the second, so the loss sees the
    concatenation ``[anchors, posnegs]`` with tuple indices shifted into the second half."""

    def calculate_loss(self, curr_batch):
        (anchors, posnegs), labels = curr_batch
        embeddings = (self.compute_embeddings(anchors), self.compute_embeddings(posnegs))
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)

    def get_batch(self):
        anchors, posnegs, labels = self.data_and_label_getter(self.next_batch())
        labels = c_f.process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return self.maybe_do_batch_mining((anchors, posnegs), labels)

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple):
        if self.loss_weights.get("metric_loss", 0) > 0:
            indices_tuple = c_f.shift_indices_tuple(indices_tuple, embeddings[0].shape[0])
            all_labels = torch.cat([labels, labels], dim=0)
            all_embeddings = torch.cat(embeddings, dim=0)
            return self.loss_funcs["metric_loss"](all_embeddings, all_labels, indices_tuple)
        return 0

    def maybe_mine_embeddings(self, embeddings, labels):
        # ref_labels is a clone, not the same object: with identical objects the miners treat the
        # reference as the batch itself and drop each item's own posneg as a "self pair".
        anchor_embeddings, posneg_embeddings = embeddings
        if "tuple_miner" in self.mining_funcs:
            return self.mining_funcs["tuple_miner"](
                anchor_embeddings, labels, posneg_embeddings, labels.clone()
            )
        labels = labels.to(anchor_embeddings.device)
        return lmu.get_all_triplets_indices(labels, labels.clone())

    def modify_schema(self):
        self.schema["mining_funcs"].keys = ["tuple_miner"]
