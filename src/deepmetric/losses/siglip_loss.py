"""SigLIP's pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image
Pre-Training", ICCV 2023, https://arxiv.org/abs/2303.15343). Not in the reference library."""

import math
import numbers

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..ops import gather
from ..ops.dtypes import accumulation_dtype
from ..ops.tiled_row_sums import tiled_row_sums
from ..utils.errors import require
from ..utils.module_with_records import ModuleWithRecords
from ._tiled_pairs import check_tile_size
from .clip_loss import check_paired_embeddings

# The paper's initial log-scale: exp(t) = 10.
INIT_LOGIT_SCALE = math.log(10)


class SigLIPLoss(ModuleWithRecords):
    """Binary classification of every (image, text) pair of a batch of paired embeddings.

    ``loss(image_embeddings, text_embeddings)``: row ``i`` of each ``(N, D)`` tensor is a
    matching pair; every other combination is a non-matching one. With ``x_i``, ``y_j`` the
    L2-normalised rows, ``t`` the learnable log-scale and ``b`` the learnable bias (the paper's
    Algorithm 1)::

        logits_ij = exp(t) * x_i . y_j + b
        z_ij      = 1 if i == j else -1
        loss      = -1/N * sum_ij log sigmoid(z_ij * logits_ij)

    Each pair is its own term, so no softmax normalises over the batch. ``t`` is initialised to
    ``log(10)`` and ``b`` to ``-10`` (the paper's values; the bias keeps the many negatives from
    dominating the first steps).

    Half-precision inputs are computed in float32 (autocast off) and the loss is returned in
    float32; other dtypes are kept.

    Under ``torch.distributed`` (initialised, more than one process) and with
    ``exchange_distributed=True``, the loss is that of the global batch (all processes' rows,
    in rank order) by the paper's chunked neighbour exchange: each process scores its own images
    against its own texts (the only block with positives), then passes the text block it holds
    to the next rank around the ring and scores the block it receives, ``world_size`` blocks in
    all; no process holds the global logits or the global batch (memory ``O(local x largest
    block)``). The exchange is differentiable: each received block's gradient travels back
    around the ring to the process that owns it. With ``r`` the local images and ``M`` the
    global batch, ``part_r = -1/M sum_{i in r} sum_j log sigmoid(z_ij logits_ij)``; the parts sum
    to the single-process loss, which every process returns (one scalar all-reduce). Exactly:
    the local embeddings receive ``world_size`` times the single-process gradient (for DDP's
    averaging), and ``logit_scale`` and ``logit_bias`` the single-process gradient itself, the
    same in every process (all-reduced in the backward pass). Every process must call
    ``backward``. With ``exchange_distributed=False`` each process computes the loss of its own
    batch.

    Args:
        init_logit_scale: initial ``t`` (``exp(t)`` multiplies the cosines).
        init_logit_bias: initial ``b``.
        learn_scale_and_bias: make ``t`` and ``b`` trainable parameters (else buffers).
        tile_size: None (default) for the dense ``(N, N)`` logits; a positive int sums each
            row's terms ``tile_size`` rows at a time and recomputes each tile in the backward
            pass (memory ``O(tile_size x N + N x D)``), equal to the dense path up to rounding.
        exchange_distributed: under torch.distributed, the loss of the global batch by the
            neighbour exchange (default); False for each process's own batch.
        **kwargs: ``collect_stats``.
    """

    def __init__(
        self,
        init_logit_scale=INIT_LOGIT_SCALE,
        init_logit_bias=-10.0,
        learn_scale_and_bias=True,
        tile_size=None,
        exchange_distributed=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        require(
            isinstance(exchange_distributed, bool),
            f"SigLIPLoss needs exchange_distributed to be a bool, got {exchange_distributed!r}",
        )
        self.exchange_distributed = exchange_distributed
        for name, value in (("init_logit_scale", init_logit_scale), ("init_logit_bias", init_logit_bias)):
            require(
                isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value),
                f"SigLIPLoss needs {name} to be a finite number, got {value!r}",
            )
        self.tile_size = check_tile_size(type(self).__name__, tile_size)
        self.learn_scale_and_bias = bool(learn_scale_and_bias)
        for name, value in (("logit_scale", init_logit_scale), ("logit_bias", init_logit_bias)):
            value = torch.tensor(float(value))
            if self.learn_scale_and_bias:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self, image_embeddings, text_embeddings):
        check_paired_embeddings("SigLIPLoss", image_embeddings, text_embeddings)
        self.reset_stats()
        dtype = accumulation_dtype(image_embeddings.dtype)
        with torch.autocast(device_type=image_embeddings.device.type, enabled=False):
            x = F.normalize(image_embeddings.to(dtype), dim=1)
            y = F.normalize(text_embeddings.to(dtype), dim=1)
            scale, bias = self.logit_scale.to(dtype).exp(), self.logit_bias.to(dtype)
            world_size = gather.world_size() if self.exchange_distributed else 1
            if world_size > 1:
                return self._exchanged_loss(x, y, scale, bias, world_size)
            return self._block_sum(_pair_terms, x, y, scale, bias) / x.shape[0]

    def _block_sum(self, terms, x, y_block, scale, bias):
        """The sum of ``terms`` over every (row of ``x``, row of ``y_block``) pair."""
        if self.tile_size is None:
            return terms(0, x, y_block, scale, bias).sum()
        return tiled_row_sums(terms, x, y_block, params=(scale, bias), tile_size=self.tile_size).sum()

    def _exchanged_loss(self, x, y, scale, bias, world_size):
        """``part_r`` of the class docstring, returned as the global loss with the gradient of
        ``world_size * part_r`` (the other parts' gradients come back around the ring)."""
        rows = gather.row_counts(x)
        rank = dist.get_rank()
        # world_size * part_r is differentiated below; the summed gradients must not be.
        scale, bias = (
            p.detach() + (gather.sum_gradient_over_processes(p) - p.detach()) / world_size
            for p in (scale, bias)
        )
        total = self._block_sum(_pair_terms, x, y, scale, bias)
        block = y
        for step in range(1, world_size):
            block = gather.pass_to_next_rank(block, rows[(rank - step) % world_size])
            total = total + self._block_sum(_negative_terms, x, block, scale, bias)
        part = total / sum(rows)
        return gather.sum_over_processes(part) + world_size * (part - part.detach())


def _pair_terms(start, x_rows, y, scale, bias):
    """``-log sigmoid(z_ij * logits_ij)`` of rows ``start:start + len(x_rows)``."""
    logits = scale * (x_rows @ y.t()) + bias
    rows = torch.arange(x_rows.shape[0], device=logits.device)
    signs = torch.full_like(logits, -1.0)
    signs[rows, rows + start] = 1.0
    return -F.logsigmoid(signs * logits)


def _negative_terms(start, x_rows, y, scale, bias):
    """``-log sigmoid(-logits_ij)``: a block of another process's texts, no matching pair."""
    return -F.logsigmoid(-(scale * (x_rows @ y.t()) + bias))
