"""Input checks shared by losses, miners and evaluation: one place per concept.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (wrong shape or
content) whose message names the argument, what was expected and what was received; where the
reference fails on the same input with another type, the error also subclasses that type (see
``deepmetric.utils.errors``).
"""

import warnings

import torch

from .errors import (
    ArgumentError,
    DtypeError,
    IndexArgumentError,
    MissingInputError,
    NotATensorError,
    OutOfRangeError,
    ShapeError,
)


def check_embeddings(x, name="embeddings", allow_empty=False, check_values=True, ndim=2):
    """A floating-point tensor of shape ``(N, D)`` with finite values (``check_values=False``:
    shape and dtype only, for callers that never read the values). ``ndim=None`` leaves the
    number of dimensions to the caller (at least one: a row per sample)."""
    if not torch.is_tensor(x):
        raise NotATensorError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise DtypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if (ndim is not None and x.ndim != ndim) or x.ndim == 0:
        raise ShapeError(
            f"{name} must be 2-D of shape (batch_size, embedding_size), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 and not allow_empty:
        raise ShapeError(f"{name} is empty (shape {tuple(x.shape)}): a batch needs at least one row")
    # x * 0 is 0 where x is finite and NaN where it is not; its sum cannot overflow. This is
    # several times faster than isfinite(x).all() and runs on every loss and miner call.
    if check_values and not bool(torch.isfinite((x.detach() * 0).sum())):
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or Inf values (in {bad} of {x.shape[0]} rows)")


def check_labels(labels, num_rows, name="labels", rows_name="embeddings", multi_hot=False):
    """A 1-D real tensor (integer, bool or floating) with one label per row of ``rows_name``;
    with ``multi_hot`` also a 2-D ``(rows, num_classes)`` tensor of multi-hot rows.

    Labels are only compared for equality here, so floating labels are accepted (as the
    reference accepts them); code that indexes with labels checks :func:`check_index_labels`.
    """
    if not torch.is_tensor(labels):
        raise NotATensorError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_complex:
        raise DtypeError(f"{name} must have a real dtype, got {labels.dtype}")
    if labels.ndim != 1 and not (multi_hot and labels.ndim == 2):
        expected = "1-D of shape (batch_size,)"
        if multi_hot:
            expected += " or 2-D multi-hot of shape (batch_size, num_classes)"
        raise ShapeError(f"{name} must be {expected}, got shape {tuple(labels.shape)}")
    if labels.shape[0] != num_rows:
        raise ShapeError(
            f"{name} has {labels.shape[0]} entries but {rows_name} has {num_rows} rows"
        )


def check_index_labels(owner, labels, name="labels"):
    """Labels that index something (a class's weight, proxy or row) must be integers; torch
    would raise an obscure ``IndexError``/``RuntimeError`` deep inside, which the error here
    also subclasses."""
    if labels is not None and (labels.dtype.is_floating_point or labels.dtype == torch.bool):
        raise IndexArgumentError(
            f"{owner} uses {name} as class indices, so they must have an integer dtype, "
            f"got {labels.dtype}"
        )


def check_same_width(query, ref, query_name="embeddings", ref_name="ref_emb"):
    if query.shape[1:] != ref.shape[1:]:
        width = lambda x: f"{x.shape[1]} columns" if x.ndim == 2 else f"shape {tuple(x.shape)}"  # noqa: E731
        raise ShapeError(
            f"{query_name} and {ref_name} must have the same width: {query_name} has "
            f"{width(query)}, {ref_name} has {width(ref)}"
        )


def check_loss_inputs(
    embeddings, labels, ref_emb, ref_labels, check_values=True, distance=None, multi_hot=False,
    label_relation=None,
):
    """The checks every metric loss (and miner) applies before computing anything.

    Embeddings must be 2-D unless ``distance`` accepts them: a distance that overrides
    ``check_shapes`` decides which shapes it can compare (the default one raises). ``multi_hot``
    (a loss or miner that takes label relations) also accepts 2-D labels; without a
    ``label_relation`` to compare them, ``labels`` and ``ref_labels`` must then have the same
    number of dimensions and, multi-hot, the same number of classes.
    """
    if distance is not None and torch.is_tensor(embeddings) and (
        embeddings.ndim != 2 or (torch.is_tensor(ref_emb) and ref_emb.ndim != 2)
    ):
        try:
            distance.check_shapes(embeddings, ref_emb)
        except ValueError as e:
            message = f"{type(distance).__name__} cannot compare these embeddings: {e}"
            try:
                named = type(e)(message)
            except Exception:  # noqa: BLE001 - an exception type with another signature
                raise e from None
            raise named from e
        ndim = None
    else:
        ndim = 2
    check_embeddings(embeddings, "embeddings", check_values=check_values, ndim=ndim)
    if labels is not None:
        check_labels(labels, embeddings.shape[0], "labels", "embeddings", multi_hot)
        if label_relation is None:
            check_multi_hot(labels, "labels")
    if ref_emb is None:
        return
    check_embeddings(ref_emb, "ref_emb", check_values=check_values, ndim=ndim)
    check_same_width(embeddings, ref_emb)
    if ref_labels is not None:
        check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb", multi_hot)
        if label_relation is None:
            check_multi_hot(ref_labels, "ref_labels")
            if labels is not None:
                check_comparable_labels(labels, ref_labels)


def check_multi_hot(labels, name="labels"):
    """2-D labels compared by the default relation are multi-hot rows: at least two classes
    (columns) and only 0/1 (or bool) entries. A ``(batch_size, 1)`` column of class indices, or
    columns of several class indices, are mistakes this catches (1-D labels pass)."""
    if labels.ndim != 2:
        return
    if labels.shape[1] < 2:
        raise ShapeError(
            f"{name} of shape {tuple(labels.shape)}: 2-D labels are multi-hot rows (batch_size, "
            "num_classes) with at least 2 classes; for one class index per row pass 1-D labels "
            f"({name}.squeeze(1))"
        )
    if labels.dtype != torch.bool and bool(((labels != 0) & (labels != 1)).any()):
        raise ArgumentError(
            f"{name}: 2-D labels are multi-hot rows and must hold only 0 and 1 (or bool), got "
            f"values in [{float(labels.min())}, {float(labels.max())}]; for another meaning of "
            "labels pass a label_relation"
        )


def check_comparable_labels(labels, ref_labels):
    """Labels compared by the default relation: both 1-D, or both multi-hot with as many classes."""
    if labels.ndim != ref_labels.ndim or labels.shape[1:] != ref_labels.shape[1:]:
        raise ShapeError(
            "labels and ref_labels must have the same width (both 1-D, or both multi-hot with "
            f"the same number of classes), got shapes {tuple(labels.shape)} and "
            f"{tuple(ref_labels.shape)}"
        )


def default_ref_labels(labels, ref_emb, ref_labels):
    """The reference labels to use when ``ref_emb`` comes without ``ref_labels``.

    The reference library then compares ``labels`` with themselves (and, taking the reference
    set for the batch, leaves out the diagonal): row ``j`` of ``ref_emb`` gets ``labels[j]``.
    That only makes sense when ``ref_emb`` has one row per label, so other sizes are an error
    (the reference crashes with an ``IndexError`` or an ``AttributeError``, or silently ignores
    the extra rows).
    Returns ``labels`` itself (the same object, which marks the same-set case) or
    ``ref_labels`` unchanged.
    """
    if ref_emb is None or ref_labels is not None or labels is None:
        return ref_labels
    if ref_emb.shape[0] != labels.shape[0]:
        # the reference fails with an IndexError (pair losses) or an AttributeError (NCALoss)
        raise MissingInputError(
            f"ref_emb was given without ref_labels, so labels would label its rows, but ref_emb "
            f"has {ref_emb.shape[0]} rows and labels has {labels.shape[0]} entries: pass ref_labels"
        )
    warnings.warn(
        "ref_emb was given without ref_labels: labels are used for ref_emb's rows too and "
        "row i of ref_emb is not paired with row i of embeddings (as in "
        "pytorch-metric-learning); pass ref_labels to compare with the reference set's own labels",
        stacklevel=3,
    )
    return labels


def whole_number_labels(owner, labels):
    """Floating ``labels`` holding whole numbers, as integers (others are returned as given);
    any other floating label cannot name a class: :class:`IndexArgumentError`."""
    if labels is None or not labels.dtype.is_floating_point:
        return labels
    whole = torch.isfinite(labels) & (labels == torch.round(labels))
    if not bool(whole.all()):
        shown = ", ".join(str(v) for v in labels[~whole][:5].tolist())
        raise IndexArgumentError(
            f"{owner} compares labels with class indices, so floating labels must hold whole "
            f"numbers, got {shown}"
        )
    return labels.long()


def check_class_inputs(owner, embeddings, labels, num_classes, embedding_size):
    """Inputs of a loss with one learnable vector per class: the embedding width must equal
    ``embedding_size`` and every label must be a class index in ``[0, num_classes)``."""
    if embeddings.shape[-1] != embedding_size:
        raise ShapeError(
            f"{owner} was built with embedding_size={embedding_size}, but embeddings have "
            f"{embeddings.shape[-1]} columns (shape {tuple(embeddings.shape)})"
        )
    check_index_labels(owner, labels)
    if labels is None or labels.numel() == 0:
        return
    low, high = torch.aminmax(labels)  # one reduction: this runs on every call of these losses
    if int(low) < 0 or int(high) >= num_classes:
        outside = (labels < 0) | (labels >= num_classes)
        bad = torch.unique(labels[outside])
        shown = ", ".join(str(v) for v in bad[:10].tolist()) + (", ..." if len(bad) > 10 else "")
        raise OutOfRangeError(
            f"{owner} labels must be class indices in [0, {num_classes}) "
            f"(num_classes={num_classes}), got {shown}"
        )


def check_indices_tuple(indices_tuple, num_rows, num_ref_rows, structured=True):
    """A miner's output: triplets ``(a, p, n)`` or pairs ``(a1, p, a2, n)`` of 1-D integer
    tensors, each list as long as its partner, anchors indexing the ``num_rows`` embeddings
    and the others the ``num_ref_rows`` reference rows. ``structured=False`` (a loss that only
    counts how often each row occurs) takes lists of any lengths, and any number of them (all
    indexing the embeddings unless there are 3 or 4).

    Anything else raises :class:`IndexArgumentError`, also an ``IndexError``/``RuntimeError``
    like torch's own. Negative indices are out of range too: a miner numbers rows from 0, and
    the reference gives them no consistent meaning (some losses index with them, others compare
    them with anchors).
    """
    is_sequence = isinstance(indices_tuple, (tuple, list))
    if not is_sequence or (structured and len(indices_tuple) not in (3, 4)):
        raise IndexArgumentError(
            "indices_tuple must be a tuple of 3 index tensors (anchors, positives, negatives) or "
            "of 4 (anchors, positives, anchors, negatives), got "
            + (f"a tuple of {len(indices_tuple)}" if is_sequence else type(indices_tuple).__name__)
        )
    if len(indices_tuple) == 3:
        names = ("a", "p", "n")
    elif len(indices_tuple) == 4:
        names = ("a1", "p", "a2", "n")
    else:
        names = tuple(str(i) for i in range(len(indices_tuple)))
    checked = []
    for name, idx in zip(names, indices_tuple):
        where = f"indices_tuple entry {name!r}"
        if not torch.is_tensor(idx) or idx.dtype.is_floating_point or idx.dtype.is_complex or (
            idx.dtype == torch.bool
        ):
            kind = idx.dtype if torch.is_tensor(idx) else type(idx).__name__
            raise IndexArgumentError(f"{where} must be an integer tensor, got {kind}")
        if idx.ndim != 1:
            raise IndexArgumentError(f"{where} must be 1-D, got shape {tuple(idx.shape)}")
        anchor = not name.startswith(("p", "n"))
        size = num_rows if anchor else num_ref_rows
        rows = "embeddings" if anchor else "ref_emb (the embeddings without one)"
        if idx.numel() > 0:
            low, high = torch.aminmax(idx)  # one reduction: this runs on every mined call
            low, high = int(low), int(high)
            if low < 0 or high >= size:
                raise IndexArgumentError(
                    f"{where} holds index {low if low < 0 else high}, out of range [0, {size}) "
                    f"for the {size} rows of {rows}"
                )
        checked.append(idx)
    if structured:
        partners = [(0, 1), (1, 2)] if len(checked) == 3 else [(0, 1), (2, 3)]
        for i, j in partners:
            if len(checked[i]) != len(checked[j]):
                raise IndexArgumentError(
                    f"indices_tuple entries {names[i]!r} and {names[j]!r} must have the same "
                    f"length, got {len(checked[i])} and {len(checked[j])}"
                )
    return list(checked) if isinstance(indices_tuple, list) else tuple(checked)
