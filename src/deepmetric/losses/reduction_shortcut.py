"""Recognise reducers whose result follows from a sum and a count of kept losses.

Losses whose per-tuple losses would not fit in memory (all triplets of a large batch) compute
such reductions block by block instead of listing every tuple. Any other reducer (or one that
collects statistics) gets the per-tuple path, so results never depend on which path ran.
"""

from dataclasses import dataclass

import torch

from ..reducers import (
    AvgNonZeroReducer,
    MeanReducer,
    MultipleReducers,
    SumReducer,
    ThresholdReducer,
)


@dataclass(frozen=True)
class PlainReduction:
    """``sum(kept)`` (``kind="sum"``) or ``mean(kept)``, kept = ``low < loss < high``."""

    kind: str
    low: float = None
    high: float = None

    @property
    def selects(self):
        """True when the reduction keeps only some losses (it has a bound)."""
        return self.low is not None or self.high is not None

    def keep(self, losses):
        kept = None
        if self.low is not None:
            kept = losses > self.low
        if self.high is not None:
            below = losses < self.high
            kept = below if kept is None else kept & below
        return kept

    def kept_within(self, losses, mask):
        """The cells of the boolean ``mask`` whose loss this reduction keeps."""
        kept = self.keep(losses)
        return mask if kept is None else kept & mask


def already_reduced(total):
    """A loss-dict entry holding a reduced value (0 for the zero entry)."""
    return {"losses": total, "indices": None, "reduction_type": "already_reduced"}


def plain_reduction_for(loss, sub_loss_name="loss"):
    """The :class:`PlainReduction` that ``loss`` applies to ``sub_loss_name``, or ``None``."""
    reducer = loss.reducer
    if isinstance(reducer, MultipleReducers):
        if reducer.collect_stats:
            return None
        reducer = reducer.reducers[sub_loss_name] if sub_loss_name in reducer.reducers else (
            reducer.default_reducer
        )
    if reducer.collect_stats:
        return None
    kind = type(reducer)
    if kind is MeanReducer:
        return PlainReduction("mean")
    if kind is SumReducer:
        return PlainReduction("sum")
    if kind is AvgNonZeroReducer:
        return PlainReduction("mean", low=0)
    if kind is ThresholdReducer:
        return PlainReduction("mean", low=reducer.low, high=reducer.high)
    return None


def reduce_masked(losses, mask, reduction):
    """Reduce the entries of the dense ``losses`` matrix where ``mask`` is True, without listing
    them. Returns a loss-dict entry: ``already_reduced``, or the zero entry when nothing is kept.
    """
    kept = reduction.kept_within(losses, mask)
    count = int(torch.count_nonzero(kept))
    if count == 0:
        return already_reduced(0)
    # Half precision is summed and divided in float32 and rounded once, as torch.mean does on
    # the listed terms (rounding the sum first would differ from it in the last bit).
    acc = torch.float32 if losses.dtype in (torch.float16, torch.bfloat16) else losses.dtype
    zero = torch.zeros((), dtype=losses.dtype, device=losses.device)
    total = torch.sum(torch.where(kept, losses, zero), dtype=acc)
    if reduction.kind == "mean":
        total = total / count
    return already_reduced(total.to(losses.dtype))
