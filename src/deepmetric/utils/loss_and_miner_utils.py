"""Index and tuple helpers shared by losses and miners (imported as ``lmu``).

Conventions: index tensors are ``torch.long`` on the labels' device. Anchor indices address the
query set (``embeddings``/``labels``); positive and negative indices address the reference set
(``ref_emb``/``ref_labels``). When the reference set *is* the query set (same Python object),
self-pairs ``(i, i)`` are neither positive nor negative.

Every helper that decides positives and negatives from labels takes ``relation`` (a loss's or
miner's ``label_relation``; see ``deepmetric.utils.label_relations``). With ``relation=None``
and 1-D labels, labels are compared for equality exactly as the reference library does.
"""

import math

import numpy as np
import torch

from ..ops.masks import count_per_row  # noqa: F401  (part of this module's interface)
from . import common_functions as c_f
from .errors import ArgumentError
from .label_relations import exclude_self_pairs, related_labels
from .pair_masks import PairMasks


def logsumexp(x, keep_mask=None, add_one=True, dim=1):
    """Masked log-sum-exp along ``dim``; ``add_one`` adds exp(0) inside (log(1 + sum exp)).

    Rows whose mask keeps nothing come out as exactly 0.
    """
    if keep_mask is not None:
        x = x.masked_fill(~keep_mask, c_f.neg_inf(x.dtype))
    if add_one:
        zeros = torch.zeros(x.size(dim - 1), dtype=x.dtype, device=x.device).unsqueeze(dim)
        x = torch.cat([x, zeros], dim=dim)
    output = torch.logsumexp(x, dim=dim, keepdim=True)
    if keep_mask is not None:
        output = output.masked_fill(~torch.any(keep_mask, dim=dim, keepdim=True), 0)
    return output


def meshgrid_from_sizes(x, y, dim=0):
    a = torch.arange(x.size(dim), device=x.device)
    b = torch.arange(y.size(dim), device=y.device)
    return torch.meshgrid(a, b, indexing="ij")


def is_same_set(labels, ref_labels):
    """True when the reference labels are the query labels themselves (identity, not equality)."""
    return ref_labels is None or ref_labels is labels


def get_label_masks(labels, ref_labels=None, relation=None):
    """Boolean ``(N, M)`` masks of positive and negative pairs (self-pairs excluded in same-set
    mode): related labels are positives, the others negatives."""
    same = is_same_set(labels, ref_labels)
    if ref_labels is None:
        ref_labels = labels
    if relation is None and labels.ndim == 1:
        pos = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        neg = ~pos
        if same:
            pos.fill_diagonal_(False)
        return pos, neg
    pos = related_labels(labels, ref_labels, relation)
    if same:
        return exclude_self_pairs(pos, ~pos)
    return pos, ~pos


def has_any_triplet(pos_mask, neg_mask):
    """True when some anchor has both a positive and a negative."""
    return bool((pos_mask.any(dim=1) & neg_mask.any(dim=1)).any())


def get_matches_and_diffs(labels, ref_labels=None, relation=None):
    """uint8 ``(N, M)`` matrices: ``matches[i, j] = labels[i] == ref_labels[j]``, ``diffs = 1 - matches``."""
    pos, neg = get_label_masks(labels, ref_labels, relation)
    return pos.byte(), neg.byte()


def get_all_pairs_indices(labels, ref_labels=None, relation=None):
    """``(a1, p, a2, n)``: every positive pair then every negative pair, in row-major order."""
    pos, neg = get_label_masks(labels, ref_labels, relation)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


def convert_to_pairs(indices_tuple, labels, ref_labels=None, relation=None):
    """None -> all pairs; :class:`PairMasks` -> its pairs listed; a 4-tuple is returned as is;
    ``(a, p, n)`` -> ``(a, p, a, n)``."""
    if indices_tuple is None:
        return get_all_pairs_indices(labels, ref_labels, relation)
    if isinstance(indices_tuple, PairMasks):
        return indices_tuple.to_pairs()
    if len(indices_tuple) == 4:
        return indices_tuple
    a, p, n = indices_tuple
    return a, p, a, n


def convert_to_pos_pairs_with_unique_labels(indices_tuple, labels):
    """The first positive pair of each distinct anchor label."""
    a, p, _, _ = convert_to_pairs(indices_tuple, labels)
    _, unique_idx = np.unique(c_f.to_numpy(labels[a]), return_index=True)
    unique_idx = torch.as_tensor(unique_idx, device=a.device, dtype=torch.long)
    return a[unique_idx], p[unique_idx]


def pos_pairs_from_tuple(indices_tuple):
    return indices_tuple[:2]


def neg_pairs_from_tuple(indices_tuple):
    return indices_tuple[2:]


def get_all_triplets_indices(labels, ref_labels=None, relation=None):
    """Every ``(a, p, n)`` with a positive and a negative of the anchor, sorted by a, p, n."""
    matches, diffs = get_matches_and_diffs(labels, ref_labels, relation)
    if matches.shape[0] * matches.shape[1] * matches.shape[1] < 2**31 - 1:
        return get_all_triplets_indices_vectorized_method(matches, diffs)
    return get_all_triplets_indices_loop_method(labels, matches, diffs)


def get_all_triplets_indices_vectorized_method(all_matches, all_diffs):
    triplets = all_matches.unsqueeze(2) * all_diffs.unsqueeze(1)
    return torch.where(triplets)


def get_all_triplets_indices_loop_method(labels, all_matches, all_diffs):
    """Same result as the vectorised method, one anchor at a time (bounded memory)."""
    all_matches, all_diffs = all_matches.bool(), all_diffs.bool()
    a_list, p_list, n_list = [], [], []
    for i in range(all_matches.shape[0]):
        p_idx = torch.where(all_matches[i])[0]
        n_idx = torch.where(all_diffs[i])[0]
        if len(p_idx) == 0 or len(n_idx) == 0:
            continue
        p_rep = p_idx.repeat_interleave(len(n_idx))
        n_rep = n_idx.repeat(len(p_idx))
        a_list.append(torch.full_like(p_rep, i))
        p_list.append(p_rep)
        n_list.append(n_rep)
    if not a_list:
        empty = torch.tensor([], dtype=torch.long, device=labels.device)
        return empty, empty.clone(), empty.clone()
    return torch.cat(a_list), torch.cat(p_list), torch.cat(n_list)


def get_random_triplet_indices(labels, ref_labels=None, t_per_anchor=None, weights=None, relation=None):
    """``t_per_anchor`` random triplets per anchor (all positives' count when None).

    Positives are drawn uniformly with replacement (never the anchor itself in same-set mode);
    negatives uniformly, or from ``weights[anchor, negatives]`` when a weight matrix is given.
    One class at a time in ascending label order: ``torch.randint`` for the positives (on the
    CPU generator), then ``torch.multinomial`` over the weight rows or ``torch.randint`` for
    the negatives; the reference's calls in its order, so a seed gives its triplets.

    With a ``relation`` (or 2-D multi-hot labels) a "class" is a distinct label value (a
    distinct row), in ascending order (rows in descending lexicographic order, so one-hot rows
    come in the order of their class indices and draw what the indices draw); its anchors draw
    among the reference rows related to it (the positives) and those that are not (the
    negatives), leaving themselves out in same-set mode. When the relation is equality this is
    the same sequence of calls on the same
    candidates, hence the same triplets.
    """
    if relation is not None or labels.ndim != 1:
        return _random_triplets_by_relation(labels, ref_labels, t_per_anchor, weights, relation)
    a_idx, p_idx, n_idx = [], [], []
    labels_device = labels.device
    same = is_same_set(labels, ref_labels)
    ref_labels = labels if ref_labels is None else ref_labels
    unique_labels = torch.unique(labels)
    for label in unique_labels:
        p_inds = torch.where(ref_labels == label)[0]
        if same:
            a_inds = p_inds
        else:
            a_inds = torch.where(labels == label)[0]
        n_inds = torch.where(ref_labels != label)[0]
        n_a = len(a_inds)
        n_p = len(p_inds)
        min_required_p = 2 if same else 1
        if n_p < min_required_p or len(n_inds) < 1:
            continue
        k = n_p if t_per_anchor is None else t_per_anchor
        num_triplets = n_a * k
        p_inds_ = p_inds.expand((n_a, n_p))
        if same:
            # Drop each anchor's own position from its row of candidate positives.
            keep = ~torch.eye(n_a, dtype=torch.bool, device=p_inds.device)
            p_inds_ = p_inds_[keep].view(n_a, n_a - 1)
        # Drawn by the CPU generator whatever the device, as the reference does.
        p_ = torch.randint(0, p_inds_.shape[1], (num_triplets,)).to(p_inds.device)
        p_ = p_inds_[torch.arange(n_a, device=p_inds.device).repeat_interleave(k), p_]
        a_ = a_inds.repeat_interleave(k)
        if weights is not None:
            w = weights[a_][:, n_inds]  # rows first: never copy the whole (N, M - n) matrix
            if w.dtype == torch.float16:
                w = w.float()
            non_zero_rows = torch.where(torch.sum(w, dim=1) > 0)[0]
            if len(non_zero_rows) == 0:
                continue
            w = w[non_zero_rows]
            a_ = a_[non_zero_rows]
            p_ = p_[non_zero_rows]
            n_ = n_inds[torch.multinomial(w, 1, replacement=True).flatten()]
        else:
            n_ = n_inds[torch.randint(0, len(n_inds), (num_triplets,)).to(n_inds.device)]
        a_idx.append(a_)
        p_idx.append(p_)
        n_idx.append(n_)
    if len(a_idx) > 0:
        return tuple(
            c_f.to_device(torch.cat(x), device=labels_device, dtype=torch.long)
            for x in (a_idx, p_idx, n_idx)
        )
    empty = torch.tensor([], device=labels_device, dtype=torch.long)
    return empty, empty.clone(), empty.clone()


def _random_triplets_by_relation(labels, ref_labels, t_per_anchor, weights, relation):
    same = is_same_set(labels, ref_labels)
    ref_labels = labels if ref_labels is None else ref_labels
    related = related_labels(labels, ref_labels, relation)
    device = labels.device
    groups, group_of = torch.unique(labels, dim=0, return_inverse=True)
    if labels.ndim == 2:
        # Descending rows: one-hot rows then come in the order of their class indices.
        group_of = len(groups) - 1 - group_of
    a_idx, p_idx, n_idx = [], [], []
    for group in range(int(group_of.max()) + 1 if len(group_of) else 0):
        a_inds = torch.where(group_of == group)[0]
        row = related[a_inds[0]]
        p_inds, n_inds = torch.where(row)[0], torch.where(~row)[0]
        # In same-set mode each anchor is a reference row too: it leaves itself out of the
        # positives when its label relates to itself, else out of the negatives.
        self_in_pos = same and bool(row[a_inds[0]])
        self_in_neg = same and not self_in_pos
        n_a, n_p, n_n = len(a_inds), len(p_inds), len(n_inds)
        if n_p - int(self_in_pos) < 1 or n_n - int(self_in_neg) < 1:
            continue
        k = n_p if t_per_anchor is None else t_per_anchor
        num_triplets = n_a * k
        anchor_rows = torch.arange(n_a, device=device).repeat_interleave(k)
        p_cand = _without_self(p_inds, a_inds) if self_in_pos else p_inds.expand((n_a, n_p))
        p_ = torch.randint(0, p_cand.shape[1], (num_triplets,)).to(device)
        p_ = p_cand[anchor_rows, p_]
        a_ = a_inds.repeat_interleave(k)
        if weights is not None:
            w = weights[a_][:, n_inds]
            if w.dtype == torch.float16:
                w = w.float()
            if self_in_neg:
                w = w.masked_fill(n_inds.unsqueeze(0) == a_.unsqueeze(1), 0)
            non_zero_rows = torch.where(torch.sum(w, dim=1) > 0)[0]
            if len(non_zero_rows) == 0:
                continue
            w, a_, p_ = w[non_zero_rows], a_[non_zero_rows], p_[non_zero_rows]
            n_ = n_inds[torch.multinomial(w, 1, replacement=True).flatten()]
        elif self_in_neg:
            n_cand = _without_self(n_inds, a_inds)
            n_ = n_cand[anchor_rows, torch.randint(0, n_cand.shape[1], (num_triplets,)).to(device)]
        else:
            n_ = n_inds[torch.randint(0, n_n, (num_triplets,)).to(device)]
        a_idx.append(a_)
        p_idx.append(p_)
        n_idx.append(n_)
    if a_idx:
        return tuple(torch.cat(x).to(device=device, dtype=torch.long) for x in (a_idx, p_idx, n_idx))
    empty = torch.tensor([], device=device, dtype=torch.long)
    return empty, empty.clone(), empty.clone()


def _without_self(candidates, anchors):
    """``(len(anchors), len(candidates) - 1)``: each anchor's candidates without the anchor
    itself (every anchor is among the candidates)."""
    keep = candidates.unsqueeze(0) != anchors.unsqueeze(1)
    return candidates.expand((len(anchors), len(candidates)))[keep].view(len(anchors), -1)


def repeat_to_match_size(smaller_set, larger_size, smaller_size):
    num_repeat = math.ceil(float(larger_size) / float(smaller_size))
    return smaller_set.repeat(num_repeat)[:larger_size]


def matched_size_indices(curr_p_idx, curr_n_idx):
    num_pos_pairs = len(curr_p_idx)
    num_neg_pairs = len(curr_n_idx)
    if num_pos_pairs > num_neg_pairs:
        n_idx = repeat_to_match_size(curr_n_idx, num_pos_pairs, num_neg_pairs)
        p_idx = curr_p_idx
    else:
        p_idx = repeat_to_match_size(curr_p_idx, num_neg_pairs, num_pos_pairs)
        n_idx = curr_n_idx
    return p_idx, n_idx


def convert_to_triplets(indices_tuple, labels, ref_labels=None, t_per_anchor=100, relation=None):
    """None -> all (or ``t_per_anchor`` random) triplets; pairs sharing an anchor -> triplets."""
    if indices_tuple is None:
        if t_per_anchor == "all":
            return get_all_triplets_indices(labels, ref_labels, relation)
        return get_random_triplet_indices(labels, ref_labels, t_per_anchor=t_per_anchor, relation=relation)
    if len(indices_tuple) == 3:
        return indices_tuple
    a1, p, a2, n = indices_tuple
    if len(a1) == 0 or len(a2) == 0:
        return [torch.tensor([], device=a1.device, dtype=torch.long)] * 3
    shared = a1.unsqueeze(1) == a2.unsqueeze(0)
    pos_idx, neg_idx = torch.where(shared)
    return a1[pos_idx], p[pos_idx], n[neg_idx]


def get_anchors(indices_tuple):
    if len(indices_tuple) == 3:
        return indices_tuple[0]
    return torch.cat([indices_tuple[0], indices_tuple[2]])


def convert_to_weights(indices_tuple, labels, dtype, using_ref=False):
    """Per-element weights: how often each index occurs in the tuple, divided by the maximum."""
    weights = torch.zeros(labels.shape[0], device=labels.device)
    weights = c_f.to_dtype(weights, dtype=dtype)
    if indices_tuple is None or all(len(x) == 0 for x in indices_tuple):
        return weights + 1
    if using_ref:
        indices = get_anchors(indices_tuple)
    else:
        indices = torch.cat(list(indices_tuple), dim=0)
    indices, counts = torch.unique(indices, return_counts=True)
    counts = c_f.to_dtype(counts, dtype=dtype) / torch.max(counts)
    weights[indices] = counts
    return weights


def not_self_comparisons(a, p, s, e, curr_batch_idx, ref_size, ref_is_subset=False):
    """Keep-mask that drops pairs whose positive is the anchor's own copy in a circular buffer.

    Row ``i`` of the current batch sits at position ``curr_batch_idx[i]`` of the reference buffer
    (``s``/``e`` are its first/last positions, kept for API compatibility). With
    ``ref_is_subset`` the roles are swapped: the batch is the reference and the anchors index the
    buffer.
    """
    if ref_is_subset:
        return a != curr_batch_idx[p]
    return p != curr_batch_idx[a]


def remove_self_comparisons(indices_tuple, curr_batch_idx, ref_size, ref_is_subset=False):
    if len(indices_tuple) not in (3, 4):
        raise ArgumentError(
            f"indices_tuple must have 3 or 4 elements, got {len(indices_tuple)}"
        )
    s, e = curr_batch_idx[0], curr_batch_idx[-1]
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        keep = not_self_comparisons(a, p, s, e, curr_batch_idx, ref_size, ref_is_subset)
        return a[keep], p[keep], n[keep]
    a1, p, a2, n = indices_tuple
    keep = not_self_comparisons(a1, p, s, e, curr_batch_idx, ref_size, ref_is_subset)
    return a1[keep], p[keep], a2, n
