"""Enumerate the triplets that satisfy a condition without listing all triplets.

Every triplet ``(a, p, n)`` is a positive pair ``(a, p)`` and a negative ``n`` of ``a``. The
positive pairs are few (about ``N`` times the class size), so they are listed; their
negatives are scanned in blocks of ``(pairs, M)`` cells. A first pass counts the selected
triplets, a second writes them into tensors of exactly that size, so memory is the output
plus one block, never ``N^3``. The order is ``(a, p, n)`` ascending, as in
``lmu.get_all_triplets_indices``.
"""

import torch

# About this many (positive pair, negative) cells are examined at once.
CELLS_PER_BLOCK = 2**22


def positive_pair_blocks(pos_mask):
    """Yield ``(a, p)`` chunks of the positive pairs, sized so a chunk times ``M`` fits a block."""
    a, p = torch.where(pos_mask)
    step = max(1, CELLS_PER_BLOCK // max(1, pos_mask.shape[1]))
    for start in range(0, len(a), step):
        yield a[start : start + step], p[start : start + step]


def select_triplets(pos_mask, neg_mask, keep_fn):
    """``(a, p, n)`` of the triplets for which ``keep_fn(a, p)`` keeps ``n``.

    ``keep_fn(a, p)`` gets a chunk of positive pairs and returns a boolean ``(len(a), M)``
    matrix (it need not apply the negative mask; this function does).
    """
    device = pos_mask.device

    def chunk_masks():
        for a, p in positive_pair_blocks(pos_mask):
            yield a, p, keep_fn(a, p) & neg_mask[a]

    total = sum(int(mask.sum()) for _, _, mask in chunk_masks())
    out = torch.empty((3, total), dtype=torch.long, device=device)
    filled = 0
    if total == 0:
        return out[0], out[1], out[2]
    for a, p, mask in chunk_masks():
        rows, n = torch.where(mask)
        end = filled + len(rows)
        out[0, filled:end] = a[rows]
        out[1, filled:end] = p[rows]
        out[2, filled:end] = n
        filled = end
    return out[0], out[1], out[2]
