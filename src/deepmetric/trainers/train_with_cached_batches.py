from ..ops.chunked_replay import replay_in_chunks
from ..utils.errors import ArgumentError
from .metric_loss_only import MetricLossOnly


class TrainWithCachedBatches(MetricLossOnly):
    """``MetricLossOnly`` for batches whose activations do not fit in memory (GradCache: Gao et
    al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021).

    ``trunk`` and ``embedder`` embed each batch ``chunk_size`` rows at a time without a graph;
    the miner and ``metric_loss`` see the whole batch's embeddings; the backward pass replays the
    models on each chunk with its graph (dropout with the masks of the forward pass, autocast as
    it ran) and takes the chunk's share of the gradient into their parameters. The parameters'
    gradients equal ``MetricLossOnly``'s on the same batch when the models treat rows
    independently (batch norm in training mode uses each chunk's statistics). See
    ``deepmetric.losses.CachedBatchLoss`` for the same step outside a trainer.

    Args:
        chunk_size: rows per chunk (a positive int, keyword-only); the other arguments are
            ``MetricLossOnly``'s. Not available with ``distributed=True``.
    """

    def __init__(self, *args, chunk_size, **kwargs):
        self.chunk_size = chunk_size
        super().__init__(*args, **kwargs)

    def _check_extra_arguments(self):
        super()._check_extra_arguments()
        size = self.chunk_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ArgumentError(f"TrainWithCachedBatches: chunk_size must be a positive int, got {size!r}")
        if self.distributed:
            raise ArgumentError(
                "TrainWithCachedBatches does not support distributed=True: the replay would run "
                "the DistributedDataParallel models inside the backward pass"
            )

    def compute_embeddings(self, data):
        models = [self.models["trunk"], self.models["embedder"]]
        params = [p for m in models for p in m.parameters() if p.requires_grad]
        buffers = [b for m in models for b in m.buffers()]
        return replay_in_chunks(
            super().compute_embeddings, data, self.chunk_size, params=params, buffers=buffers
        )
