"""The positive and negative pairs of a batch, a tile of anchor rows at a time.

The tiled paths of the contrastive losses never hold an ``(N, M)`` matrix, masks included:
each tile's masks are computed from the labels when needed (``O(tile x M)``), exactly as
:func:`~deepmetric.utils.loss_and_miner_utils.get_label_masks` decides them for the whole batch.
"""

import torch

from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import ArgumentError


def check_tile_size(owner, tile_size):
    """``tile_size`` itself once it is None or a positive int."""
    if tile_size is not None and (
        isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1
    ):
        raise ArgumentError(f"{owner}: tile_size must be None or a positive int, got {tile_size!r}")
    return tile_size


class TiledLabelPairs:
    """Rows ``start:end`` of the masks ``get_label_masks(labels, ref_labels, relation)``."""

    def __init__(self, labels, ref_labels, relation, tile_size):
        self.same = lmu.is_same_set(labels, ref_labels)
        self.labels = labels
        self.ref_labels = labels if ref_labels is None else ref_labels
        self.relation = relation
        self.tile_size = tile_size

    def masks(self, start, end):
        """``(pos, neg)``, bool ``(end - start, M)``; a row is neither its own positive nor its
        own negative in same-set mode."""
        pos = lmu.related_labels(self.labels[start:end], self.ref_labels, self.relation)
        neg = ~pos
        if self.same:
            rows = torch.arange(end - start, device=pos.device)
            pos[rows, rows + start] = False
            neg[rows, rows + start] = False
        return pos, neg

    def tiles(self):
        n = len(self.labels)
        return [(s, min(s + self.tile_size, n)) for s in range(0, n, self.tile_size)]

    def summary(self):
        """``(a1, p, num_pos_per_row, num_neg)``: the positive pairs in row-major order (as
        ``torch.where`` lists them), each row's count of positives, and the number of negative
        pairs."""
        a1, p, num_pos, num_neg = [], [], [], 0
        for start, end in self.tiles():
            pos, neg = self.masks(start, end)
            rows, cols = torch.where(pos)
            a1.append(rows + start)
            p.append(cols)
            num_pos.append(pos.sum(dim=1))
            num_neg += int(torch.count_nonzero(neg))
        if not a1:
            empty = torch.zeros(0, dtype=torch.long, device=self.labels.device)
            return empty, empty.clone(), empty.clone(), 0
        return torch.cat(a1), torch.cat(p), torch.cat(num_pos), num_neg


def paired_values(distance, query, ref, chunk):
    """``distance(query, ref)[i, i]`` for each row pair, ``chunk`` pairs at a time: the
    distance's own value for each pair without its ``(P, P)`` matrix (each chunk's square is
    freed once its diagonal is copied)."""
    parts = [
        distance(query[s : s + chunk], ref[s : s + chunk]).diagonal().clone()
        for s in range(0, len(query), chunk)
    ]
    return torch.cat(parts) if parts else query.new_zeros(0)
