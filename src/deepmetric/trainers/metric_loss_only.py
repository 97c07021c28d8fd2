from .base_trainer import BaseTrainer


class MetricLossOnly(BaseTrainer):
    """Trains ``trunk`` (and ``embedder``) with one metric loss, ``loss_funcs["metric_loss"]``,
    on the embeddings of each batch, optionally with a ``tuple_miner`` choosing the pairs or
    triplets."""

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple):
        if self.loss_weights.get("metric_loss", 0) > 0:
            return self.loss_funcs["metric_loss"](embeddings, labels, indices_tuple)
        return 0
