"""A loss of a whole large batch whose model runs a chunk at a time (GradCache: Gao et al.,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", RepL4NLP 2021).
Not in the reference library."""

import torch

from ..ops.chunked_replay import replay_in_chunks
from ..utils.errors import ArgumentError


class CachedBatchLoss(torch.nn.Module):
    """``loss(model(inputs), ...)`` for a batch whose activations would not fit in memory.

    A contrastive loss needs the whole batch at once (every row is every other row's negative),
    so gradient accumulation over small batches is a different, weaker loss. This wrapper keeps
    the loss of the whole batch and bounds the model's memory instead:

    1. the model embeds ``inputs`` ``chunk_size`` rows at a time without a graph, and only the
       ``(N, D)`` embeddings are kept;
    2. the loss (and the miner, if any) runs on the whole batch of embeddings;
    3. ``backward()`` gives the gradient of the loss with respect to the embeddings, then runs
       the model again on each chunk, with its graph, and takes the chunk's slice of that
       gradient back into the model's parameters; one chunk's graph exists at a time.

    The gradients are those of the plain step ``loss(model(inputs))`` when the model treats rows
    independently: random layers (dropout) are replayed with the random state each chunk saw in
    step 1, so they draw the same masks, and autocast (AMP) is replayed as it was. Batch norm in
    training mode normalises each chunk by its own statistics (as in any chunked forward pass);
    the replay leaves its running statistics as step 1 left them. Memory: one chunk's
    activations, plus what the loss itself needs (use a tiled loss, ``NTXentLoss(tile_size=...)``,
    to avoid its ``N x N`` matrix).

    ``parameters()`` holds the model's and the loss's parameters, so one optimizer over the
    wrapper trains both.

    Args:
        model: ``model(inputs_chunk) -> (rows, D)``; its parameters that require a gradient get
            one.
        loss: any loss taking ``(embeddings, ...)``: a deepmetric metric loss, ``CLIPLoss``
            (then ``forward(inputs, text_embeddings)``), a wrapper.
        chunk_size: rows per chunk (a positive int).
        miner: optional miner run on the whole batch's embeddings, its tuple handed to the loss
            as ``indices_tuple`` (metric losses only).
    """

    def __init__(self, model, loss, chunk_size, miner=None):
        super().__init__()
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ArgumentError(f"CachedBatchLoss: chunk_size must be a positive int, got {chunk_size!r}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"CachedBatchLoss: model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.loss = loss
        self.miner = miner
        self.chunk_size = chunk_size

    def embed(self, inputs):
        """The model's ``(N, D)`` embeddings of ``inputs``, computed chunk by chunk and replayed
        in the backward pass."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return replay_in_chunks(
            self.model, inputs, self.chunk_size, params=params, buffers=list(self.model.buffers())
        )

    def forward(self, inputs, *args, **kwargs):
        """``loss(embed(inputs), *args, **kwargs)``; with a miner, ``args``/``kwargs`` are those
        of a metric loss (``labels``, ``indices_tuple``, ``ref_emb``, ``ref_labels``)."""
        embeddings = self.embed(inputs)
        if self.miner is not None:
            return self._mined_loss(embeddings, *args, **kwargs)
        return self.loss(embeddings, *args, **kwargs)

    def _mined_loss(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        if indices_tuple is None:
            indices_tuple = self.miner(embeddings, labels, ref_emb, ref_labels)
        return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
