"""Every (anchor, reference) pair, given as two dense boolean masks instead of index lists."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairMasks:
    """``pos[i, j]`` / ``neg[i, j]``: anchor ``i`` and reference row ``j`` form a positive /
    negative pair. Stands where a 4-tuple ``(a1, p, a2, n)`` would, for wrappers that select
    most of an (N, M) grid (CrossBatchMemory against its whole queue): listing millions of index
    pairs costs more than the loss itself, while the pair losses reduce the masks directly.

    :meth:`to_pairs` lists the pairs in the order ``torch.where`` gives (row-major), the order of
    ``get_all_pairs_indices``, so a loss that needs lists gets exactly the same tuple.
    """

    pos: torch.Tensor
    neg: torch.Tensor

    def __post_init__(self):
        for name in ("pos", "neg"):
            mask = getattr(self, name)
            if not torch.is_tensor(mask) or mask.dtype != torch.bool or mask.dim() != 2:
                raise TypeError(f"PairMasks.{name} must be a 2-D torch.bool tensor, got {mask!r:.80}")
        if self.pos.shape != self.neg.shape:
            raise ValueError(
                f"PairMasks needs masks of one shape, got {tuple(self.pos.shape)} and {tuple(self.neg.shape)}"
            )

    def at_most_one_pair_each(self):
        """True when there is at most one positive and at most one negative pair (a zero loss,
        as for listed pairs)."""
        return int(torch.count_nonzero(self.pos)) <= 1 and int(torch.count_nonzero(self.neg)) <= 1

    def positive_pairs_if_any_negative(self):
        """``(a1, p)`` of the positive pairs, or ``None`` when there is no positive pair or no
        negative pair at all (losses that contrast positives with negatives are then zero)."""
        a1, p = torch.where(self.pos)
        if len(a1) == 0 or not bool(self.neg.any()):
            return None
        return a1, p

    def to_pairs(self):
        """``(a1, p, a2, n)`` index lists of the positive then the negative pairs."""
        a1, p = torch.where(self.pos)
        a2, n = torch.where(self.neg)
        return a1, p, a2, n
