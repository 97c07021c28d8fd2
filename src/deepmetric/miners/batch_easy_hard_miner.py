"""One positive and one negative per anchor, chosen by strategy (easy, semihard, hard, all)."""

from typing import ClassVar

import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_miner import BaseMiner


class BatchEasyHardMiner(BaseMiner):
    """Per anchor, selects a positive by ``pos_strategy`` and a negative by ``neg_strategy``.

    "hard" means bad for the model. Positives: ``"hard"`` is the least similar positive,
    ``"easy"`` the most similar, ``"semihard"`` the least similar among those strictly more
    similar than the anchor's selected negative. Negatives: ``"hard"`` is the most similar,
    ``"easy"`` the least similar, ``"semihard"`` the most similar among those strictly less
    similar than the anchor's selected positive. ``"all"`` keeps every pair of that side.
    (Xuan et al., "Improved Embeddings with Easy Positive Triplet Mining", WACV 2020.)

    Args:
        pos_strategy, neg_strategy: one of ``"hard"``, ``"semihard"``, ``"easy"``, ``"all"``;
            not both ``"semihard"``, and ``"semihard"`` not with ``"all"``.
        allowed_pos_range, allowed_neg_range: optional inclusive ``(low, high)`` bounds on the
            matrix value of eligible pairs.

    Output: ``(a, p, a, n)`` with one entry per anchor that has both a selected positive and a
    selected negative; with ``"all"`` on a side, that side lists all its pairs.
    """

    HARD = "hard"
    SEMIHARD = "semihard"
    EASY = "easy"
    ALL = "all"
    all_batch_mining_strategies: ClassVar[list] = [HARD, SEMIHARD, EASY, ALL]

    def __init__(
        self,
        pos_strategy=EASY,
        neg_strategy=SEMIHARD,
        allowed_pos_range=None,
        allowed_neg_range=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("pos_strategy", pos_strategy), ("neg_strategy", neg_strategy)):
            if value not in self.all_batch_mining_strategies:
                raise ValueError(
                    f"{name} must be one of {self.all_batch_mining_strategies}, got {value!r}"
                )
        if pos_strategy == neg_strategy == self.SEMIHARD:
            raise ValueError("pos_strategy and neg_strategy cannot both be 'semihard'")
        if {pos_strategy, neg_strategy} == {self.SEMIHARD, self.ALL}:
            raise ValueError(
                "'semihard' needs a selected pair on the other side, so it cannot be combined "
                f"with 'all' (got pos_strategy={pos_strategy!r}, neg_strategy={neg_strategy!r})"
            )
        self.pos_strategy = pos_strategy
        self.neg_strategy = neg_strategy
        self.allowed_pos_range = allowed_pos_range
        self.allowed_neg_range = allowed_neg_range
        self.add_to_recordable_attributes(
            list_of_names=[
                "easiest_triplet",
                "hardest_triplet",
                "easiest_pos_pair",
                "hardest_pos_pair",
                "easiest_neg_pair",
                "hardest_neg_pair",
            ],
            is_stat=True,
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        # Boolean masks instead of pair lists: the selection needs no list of the N*M pairs.
        pos_mask, neg_mask = lmu.get_label_masks(labels, ref_labels, self.label_relation)
        a1_idx, p_idx, a2_idx, n_idx = pos_mask, None, neg_mask, None
        a = torch.arange(mat.size(0), device=mat.device)

        pos_all = self.pos_strategy == self.ALL
        neg_all = self.neg_strategy == self.ALL
        if self.pos_strategy == self.SEMIHARD:
            (neg_vals, neg_choice), neg_rows = self.get_negatives(mat, a2_idx, n_idx)
            (pos_vals, pos_choice), pos_rows = self.get_positives(mat, a1_idx, p_idx, neg_vals)
        elif self.neg_strategy == self.SEMIHARD:
            (pos_vals, pos_choice), pos_rows = self.get_positives(mat, a1_idx, p_idx)
            (neg_vals, neg_choice), neg_rows = self.get_negatives(mat, a2_idx, n_idx, pos_vals)
        else:
            if not pos_all:
                (pos_vals, pos_choice), pos_rows = self.get_positives(mat, a1_idx, p_idx)
            if not neg_all:
                (neg_vals, neg_choice), neg_rows = self.get_negatives(mat, a2_idx, n_idx)

        if pos_all:
            a1_idx, p_idx = torch.where(pos_mask)
        if neg_all:
            a2_idx, n_idx = torch.where(neg_mask)
        if pos_all and neg_all:
            self.set_stats(mat[a1_idx, p_idx], mat[a2_idx, n_idx])
            return a1_idx, p_idx, a2_idx, n_idx
        if pos_all:
            self.set_stats(mat[a1_idx, p_idx], neg_vals[neg_rows])
            return a1_idx, p_idx, a[neg_rows], neg_choice[neg_rows]
        if neg_all:
            self.set_stats(pos_vals[pos_rows], mat[a2_idx, n_idx])
            return a[pos_rows], pos_choice[pos_rows], a2_idx, n_idx
        keep = pos_rows & neg_rows
        self.set_stats(pos_vals[keep], neg_vals[keep])
        anchors = a[keep]
        return anchors, pos_choice[keep], anchors, neg_choice[keep]

    def get_positives(self, mat, a1_idx, p_idx, negative_dists=None):
        mine_fn = self.get_mine_function(self.pos_strategy)
        return mine_fn(mat, a1_idx, p_idx, self.allowed_pos_range, negative_dists)

    def get_negatives(self, mat, a2_idx, n_idx, positive_dists=None):
        # The easiest negative is found the way the hardest positive is, and vice versa.
        flipped = {self.EASY: self.HARD, self.HARD: self.EASY, self.SEMIHARD: self.EASY}
        mine_fn = self.get_mine_function(flipped[self.neg_strategy])
        return mine_fn(mat, a2_idx, n_idx, self.allowed_neg_range, positive_dists)

    def get_mine_function(self, strategy):
        """The row reduction that finds a positive of ``strategy`` (max distance when hard)."""
        if strategy in (self.HARD, self.SEMIHARD):
            return self.get_min_per_row if self.distance.is_inverted else self.get_max_per_row
        if strategy == self.EASY:
            return self.get_max_per_row if self.distance.is_inverted else self.get_min_per_row
        raise NotImplementedError(f"no per-row selection for strategy {strategy!r}")

    def get_max_per_row(self, *args, **kwargs):
        return self.get_x_per_row("max", *args, **kwargs)

    def get_min_per_row(self, *args, **kwargs):
        return self.get_x_per_row("min", *args, **kwargs)

    def get_x_per_row(
        self, xtype, mat, anchor_idx, other_idx, val_range=None, semihard_thresholds=None
    ):
        """``((values, indices), non_empty_rows)``: the row-wise min or max over eligible cells.

        Eligible: listed in ``(anchor_idx, other_idx)``, inside ``val_range``, and (with
        thresholds) strictly beyond the row's threshold in the direction of the reduction.
        Rows without an eligible cell hold +-inf and are False in ``non_empty_rows``.
        ``anchor_idx`` may instead be a boolean ``(N, M)`` mask of listed cells, with
        ``other_idx=None`` (what ``mine`` passes, to avoid listing every pair).
        """
        if xtype not in ("min", "max"):
            raise ValueError(f"xtype must be 'min' or 'max', got {xtype!r}")
        if other_idx is None:
            eligible = anchor_idx.clone()
        else:
            eligible = torch.zeros_like(mat, dtype=torch.bool)
            eligible[anchor_idx, other_idx] = True
        if semihard_thresholds is not None:
            thresholds = semihard_thresholds.unsqueeze(1)
            eligible &= mat > thresholds if xtype == "min" else mat < thresholds
        if val_range is not None:
            eligible &= (mat >= val_range[0]) & (mat <= val_range[1])
        fill = c_f.pos_inf(mat.dtype) if xtype == "min" else c_f.neg_inf(mat.dtype)
        masked = mat.masked_fill(~eligible, fill)
        reduce_fn = torch.min if xtype == "min" else torch.max
        return reduce_fn(masked, dim=1), eligible.any(dim=1)

    def get_func_for_stats(self, min_if_inverted):
        if min_if_inverted:
            return torch.min if self.distance.is_inverted else torch.max
        return torch.max if self.distance.is_inverted else torch.min

    def set_stats(self, positive_dists, negative_dists):
        if not self.collect_stats:
            return
        hard_fn = self.get_func_for_stats(True)
        easy_fn = self.get_func_for_stats(False)
        if len(positive_dists) > 0:
            self.easiest_pos_pair = easy_fn(positive_dists).item()
            self.hardest_pos_pair = hard_fn(positive_dists).item()
        if len(negative_dists) > 0:
            self.easiest_neg_pair = hard_fn(negative_dists).item()
            self.hardest_neg_pair = easy_fn(negative_dists).item()
        both_selected = self.ALL not in (self.pos_strategy, self.neg_strategy)
        if both_selected and len(positive_dists) > 0 and len(negative_dists) > 0:
            margins = positive_dists - negative_dists
            self.easiest_triplet = easy_fn(margins).item()
            self.hardest_triplet = hard_fn(margins).item()
