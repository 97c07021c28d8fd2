"""Input checks shared by losses, miners and evaluation: one place per concept.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (wrong shape or
content) whose message names the argument, what was expected and what was received; where the
reference fails on the same input with another type, the error also subclasses that type (see
``deepmetric.utils.errors``).
"""

import torch

from .errors import DtypeError, MissingInputError, NotATensorError, OutOfRangeError, ShapeError


def check_embeddings(x, name="embeddings", allow_empty=False, check_values=True):
    """A floating-point tensor of shape ``(N, D)`` with finite values (``check_values=False``:
    shape and dtype only, for callers that never read the values)."""
    if not torch.is_tensor(x):
        raise NotATensorError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise DtypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.ndim != 2:
        raise ShapeError(
            f"{name} must be 2-D of shape (batch_size, embedding_size), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 and not allow_empty:
        raise ShapeError(f"{name} is empty (shape {tuple(x.shape)}): a batch needs at least one row")
    # x * 0 is 0 where x is finite and NaN where it is not; its sum cannot overflow. This is
    # several times faster than isfinite(x).all() and runs on every loss and miner call.
    if check_values and not bool(torch.isfinite((x.detach() * 0).sum())):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or Inf values (in {bad} of {x.shape[0]} rows)")


def check_labels(labels, num_rows, name="labels", rows_name="embeddings"):
    """A 1-D integer (or bool) tensor with one label per row of ``rows_name``."""
    if not torch.is_tensor(labels):
        raise NotATensorError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise DtypeError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.ndim != 1:
        raise ShapeError(f"{name} must be 1-D of shape (batch_size,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != num_rows:
        raise ShapeError(
            f"{name} has {labels.shape[0]} entries but {rows_name} has {num_rows} rows"
        )


def check_same_width(query, ref, query_name="embeddings", ref_name="ref_emb"):
    if query.shape[1] != ref.shape[1]:
        raise ShapeError(
            f"{query_name} and {ref_name} must have the same width: {query_name} has "
            f"{query.shape[1]} columns, {ref_name} has {ref.shape[1]}"
        )


def check_loss_inputs(embeddings, labels, ref_emb, ref_labels, check_values=True):
    """The checks every metric loss (and miner) applies before computing anything."""
    check_embeddings(embeddings, "embeddings", check_values=check_values)
    if labels is not None:
        check_labels(labels, embeddings.shape[0], "labels", "embeddings")
    if ref_emb is None:
        return
    check_embeddings(ref_emb, "ref_emb", check_values=check_values)
    check_same_width(embeddings, ref_emb)
    if ref_labels is not None:
        check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb")
    elif labels is not None:
        raise MissingInputError(
            "ref_emb was given with labels but without ref_labels: pass ref_labels so that "
            "query labels are compared with the reference set's labels"
        )


def check_class_inputs(owner, embeddings, labels, num_classes, embedding_size):
    """Inputs of a loss with one learnable vector per class: the embedding width must equal
    ``embedding_size`` and every label must be a class index in ``[0, num_classes)``."""
    if embeddings.shape[-1] != embedding_size:
        raise ShapeError(
            f"{owner} was built with embedding_size={embedding_size}, but embeddings have "
            f"{embeddings.shape[-1]} columns (shape {tuple(embeddings.shape)})"
        )
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
