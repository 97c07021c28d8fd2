"""SigLIP's pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image
Pre-Training", ICCV 2023, https://arxiv.org/abs/2303.15343). Not in the reference library."""

import math
import numbers

import torch
import torch.nn.functional as F

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
    float32; other dtypes are kept. Under ``torch.distributed`` each process computes the loss
    of its own batch (no exchange between processes).

    Args:
        init_logit_scale: initial ``t`` (``exp(t)`` multiplies the cosines).
        init_logit_bias: initial ``b``.
        learn_scale_and_bias: make ``t`` and ``b`` trainable parameters (else buffers).
        tile_size: None (default) for the dense ``(N, N)`` logits; a positive int sums each
            row's terms ``tile_size`` rows at a time and recomputes each tile in the backward
            pass (memory ``O(tile_size x N + N x D)``), equal to the dense path up to rounding.
        **kwargs: ``collect_stats``.
    """

    def __init__(
        self,
        init_logit_scale=INIT_LOGIT_SCALE,
        init_logit_bias=-10.0,
        learn_scale_and_bias=True,
        tile_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
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
            if self.tile_size is None:
                row_sums = _pair_terms(0, x, y, scale, bias).sum(dim=1)
            else:
                row_sums = tiled_row_sums(_pair_terms, x, y, params=(scale, bias), tile_size=self.tile_size)
            return row_sums.sum() / x.shape[0]


def _pair_terms(start, x_rows, y, scale, bias):
    """``-log sigmoid(z_ij * logits_ij)`` of rows ``start:start + len(x_rows)``."""
    logits = scale * (x_rows @ y.t()) + bias
    rows = torch.arange(x_rows.shape[0], device=logits.device)
    signs = torch.full_like(logits, -1.0)
    signs[rows, rows + start] = 1.0
    return -F.logsigmoid(signs * logits)
