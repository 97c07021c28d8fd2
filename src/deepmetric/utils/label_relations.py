"""Which labels count as the same: the relation behind every positive and negative pair.

Losses and miners decide that rows ``i`` and ``j`` form a positive pair when their labels are
related and a negative pair otherwise. The relation is, by default:

* equality, for 1-D labels (one class per row): ``labels[i] == ref_labels[j]``;
* sharing a class, for 2-D multi-hot labels ``(rows, num_classes)`` (0/1 or bool entries, at
  least two classes, checked by ``validation.check_multi_hot``):
  ``any_c labels[i, c] != 0 and ref_labels[j, c] != 0``.

A loss or miner built with ``label_relation=f`` calls ``f(labels, ref_labels)`` instead; ``f``
must return a ``torch.bool`` tensor of shape ``(len(labels), len(ref_labels))`` and depend only
on the label values (two rows with equal labels relate to everything the same way). Labels may
then be anything ``f`` understands that has one entry (or row) per embedding, 1-D or 2-D.
A row is never its own positive or negative: in same-set mode (no ``ref_emb``) the diagonal is
left out of both, whatever the relation says.
"""

import torch

from .errors import ArgumentError, ShapeError


def check_label_relation(owner, relation):
    """``relation`` itself, once it is known to be None or callable."""
    if relation is not None and not callable(relation):
        raise TypeError(
            f"{owner}: label_relation must be a function (labels_a, labels_b) -> bool tensor of "
            f"shape (len(labels_a), len(labels_b)), got {type(relation).__name__}"
        )
    return relation


def related_labels(labels, ref_labels, relation=None):
    """``(N, M)`` bool matrix: ``out[i, j]`` is True when ``labels[i]`` and ``ref_labels[j]`` are
    related (module docstring). The default for 1-D labels is exactly
    ``labels.unsqueeze(1) == ref_labels.unsqueeze(0)``."""
    if relation is None:
        if labels.ndim == 1 and ref_labels.ndim == 1:
            return labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        return shared_classes(labels, ref_labels)
    out = relation(labels, ref_labels)
    expected = (labels.shape[0], ref_labels.shape[0])
    if not torch.is_tensor(out) or out.dtype != torch.bool:
        got = out.dtype if torch.is_tensor(out) else type(out).__name__
        raise ArgumentError(
            f"label_relation must return a torch.bool tensor of shape {expected}, got {got}"
        )
    if tuple(out.shape) != expected:
        raise ShapeError(
            f"label_relation must return a bool tensor of shape {expected} (len(labels_a), "
            f"len(labels_b)), got shape {tuple(out.shape)}"
        )
    return out


def shared_classes(labels, ref_labels):
    """Multi-hot labels: ``out[i, j]`` is True when rows ``i`` and ``j`` share a class."""
    if labels.ndim != 2 or ref_labels.ndim != 2:
        raise ShapeError(
            "labels must be both 1-D (one class per row) or both 2-D multi-hot (rows, num_classes), "
            f"got shapes {tuple(labels.shape)} and {tuple(ref_labels.shape)}"
        )
    if labels.shape[1] != ref_labels.shape[1]:
        raise ShapeError(
            "multi-hot labels must have the same number of classes (columns): labels have "
            f"{labels.shape[1]}, ref_labels {ref_labels.shape[1]}"
        )
    # 0/1 products summed in float32 are exact counts; any shared class makes the count >= 1.
    a = (labels != 0).to(torch.float32)
    b = (ref_labels != 0).to(device=a.device, dtype=torch.float32)
    return (a @ b.T) > 0


def exclude_self_pairs(pos, neg):
    """Same-set masks without the diagonal (a row is neither its own positive nor negative)."""
    pos, neg = pos.clone(), neg.clone()
    pos.fill_diagonal_(False)
    neg.fill_diagonal_(False)
    return pos, neg
