"""Counting over boolean masks."""

import torch


def count_per_row(mask):
    """``mask.sum(dim=1)`` (``torch.long``) for a boolean ``(N, M)`` mask, counted as bytes into
    int32: a boolean row sum into int64 is not vectorised on CPU and costs about ten times more
    (11 ms against 1 ms for 2048 x 2048)."""
    if mask.dtype != torch.bool:
        mask = mask != 0
    return mask.view(torch.uint8).sum(dim=1, dtype=torch.int32).long()
