from ..miners import HDCMiner
from ..utils import common_functions as c_f
from .base_trainer import BaseTrainer


class CascadedEmbeddings(BaseTrainer):
    """Hard-aware deeply cascaded embeddings (Yuan et al., "Hard-Aware Deeply Cascaded Embedding",
    ICCV 2017).

    The embedder's output is the concatenation of ``len(embedding_sizes)`` cascade outputs of the
    given widths. Cascade ``i`` gets its own ``metric_loss_i``, optional ``tuple_miner_i`` and
    optional ``classifier_i`` / ``classifier_loss_i``. An ``HDCMiner`` at stage ``i`` filters the
    tuples the previous stage's miner selected, so each stage works on harder examples.
    """

    def __init__(self, embedding_sizes, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.embedding_sizes = embedding_sizes

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        start = 0
        logits = []
        indices_tuple = None
        for i, size in enumerate(self.embedding_sizes):
            e = embeddings[:, start : start + size]
            indices_tuple = self.maybe_mine_embeddings(e, labels, indices_tuple, f"tuple_miner_{i}")
            self.losses[f"metric_loss_{i}"] += self.maybe_get_metric_loss(
                e, labels, indices_tuple, f"metric_loss_{i}"
            )
            logits.append(self.maybe_get_logits(e, f"classifier_{i}"))
            start += size
        for i, stage_logits in enumerate(logits):
            if stage_logits is not None:
                self.losses[f"classifier_loss_{i}"] += self.maybe_get_classifier_loss(
                    stage_logits, labels, f"classifier_loss_{i}"
                )

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple, curr_loss_name):
        if self.loss_weights.get(curr_loss_name, 0) > 0:
            return self.loss_funcs[curr_loss_name](embeddings, labels, indices_tuple)
        return 0

    def maybe_mine_embeddings(self, embeddings, labels, prev_indices_tuple, curr_miner_name):
        if curr_miner_name not in self.mining_funcs:
            return None
        miner = self.mining_funcs[curr_miner_name]
        if isinstance(miner, HDCMiner):
            miner.set_idx_externally(prev_indices_tuple, labels)
            indices_tuple = miner(embeddings, labels)
            miner.reset_idx()
            return indices_tuple
        return miner(embeddings, labels)

    def maybe_get_logits(self, embeddings, curr_classifier_name):
        if self.models.get(curr_classifier_name, None):
            return self.models[curr_classifier_name](embeddings)
        return None

    def maybe_get_classifier_loss(self, logits, labels, curr_loss_name):
        if self.loss_weights.get(curr_loss_name, 0) > 0:
            return self.loss_funcs[curr_loss_name](logits, c_f.to_device(labels, logits))
        return 0

    def modify_schema(self):
        self.schema["models"].keys += ["classifier_[0-9]+"]
        self.schema["loss_funcs"].keys = ["metric_loss_[0-9]+", "classifier_loss_[0-9]+"]
        self.schema["mining_funcs"].keys = ["tuple_miner_[0-9]+"]
