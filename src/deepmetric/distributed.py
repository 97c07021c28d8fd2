"""Losses and miners over the global batch of ``torch.distributed`` training.

Each process embeds its own batch; the wrappers gather every process's embeddings and labels
so the loss (or miner) sees the whole global batch. The local rows come first and are the only
ones that carry gradients: every process computes the same loss value, so its local rows get
the exact gradient of the global loss, and the wrappers multiply by the world size to undo
``DistributedDataParallel``'s averaging. The sum over processes then equals single-process
training on the concatenated batch.

Unlike the reference, processes may hold batches of different sizes (they are padded for the
collective and trimmed after).
"""

import warnings

import torch
import torch.distributed as dist

from .losses import BaseMetricLossFunction, CrossBatchMemory
from .miners import BaseMiner
from .ops.gather import all_gather_rows, is_distributed, world_size
from .utils import common_functions as c_f
from .utils import loss_and_miner_utils as lmu
from .utils.errors import MissingInputError


def all_gather(x):
    """The other processes' ``x`` concatenated in rank order (this rank's removed); None alone."""
    if world_size() <= 1:
        return None
    rank = dist.get_rank()
    return torch.cat([part for r, part in enumerate(all_gather_rows(x)) if r != rank], dim=0)


def all_gather_embeddings_and_labels(emb, labels):
    if not is_distributed():
        return None, None
    ref_emb = all_gather(emb)
    ref_labels = all_gather(labels) if labels is not None else None
    return ref_emb, ref_labels


def gather(emb, labels):
    """``(all_emb, all_labels, labels)``: local rows first, then the other ranks' rows."""
    if labels is not None:
        labels = c_f.to_device(labels, device=emb.device)
    dist_emb, dist_labels = all_gather_embeddings_and_labels(emb, labels)
    if dist_emb is None:
        return emb, labels, labels
    all_emb = torch.cat([emb, dist_emb], dim=0)
    all_labels = torch.cat([labels, dist_labels], dim=0) if dist_labels is not None else None
    return all_emb, all_labels, labels


def gather_emb_and_ref(emb, labels, ref_emb=None, ref_labels=None):
    all_emb, all_labels, labels = gather(emb, labels)
    all_ref_emb, all_ref_labels = None, None
    if ref_emb is not None:
        all_ref_emb, all_ref_labels, _ = gather(ref_emb, ref_labels)
    return all_emb, all_labels, all_ref_emb, all_ref_labels, labels


def get_indices_tuple(labels, ref_labels, embeddings=None, ref_emb=None, miner=None, relation=None):
    """All pairs (or the miner's tuples) of local anchors against the gathered reference,
    without each anchor's pairing with its own copy (the local rows come first). ``relation``:
    the loss's ``label_relation`` deciding the pairs without a miner."""
    curr_batch_idx = torch.arange(len(labels), device=labels.device)
    if miner:
        indices_tuple = miner(embeddings, labels, ref_emb, ref_labels)
    else:
        indices_tuple = lmu.get_all_pairs_indices(labels, ref_labels, relation)
    return lmu.remove_self_comparisons(indices_tuple, curr_batch_idx, len(ref_labels))


def gather_enqueue_mask(enqueue_mask, device):
    if enqueue_mask is None:
        return enqueue_mask
    enqueue_mask = c_f.to_device(enqueue_mask, device=device)
    others = all_gather(enqueue_mask)
    return enqueue_mask if others is None else torch.cat([enqueue_mask, others])


def select_ref_or_regular(regular, ref):
    return regular if ref is None else ref


class DistributedLossWrapper(torch.nn.Module):
    """Computes ``loss`` over the global batch of all processes (times the world size).

    Args:
        loss: a metric loss or ``CrossBatchMemory``.
        efficient: ``False``: every process computes the loss of the whole gathered batch
            (gradients equal single-process training on the global batch). ``True``: only
            local anchors against the gathered reference set (less compute and memory;
            gradients differ). Must match the ``DistributedMinerWrapper``'s setting.
            Around ``CrossBatchMemory``, ``True`` enqueues every process's rows (in rank order,
            so every process keeps the same memory) and compares only the local rows with the
            memory, each without its own copy there; ``False`` runs the memory on the whole
            gathered batch in every process.
    """

    def __init__(self, loss, efficient=False):
        super().__init__()
        if not isinstance(loss, BaseMetricLossFunction) and not isinstance(loss, CrossBatchMemory):
            raise TypeError(
                "DistributedLossWrapper needs a metric loss (BaseMetricLossFunction) or "
                f"CrossBatchMemory, got {type(loss).__name__}"
            )
        self.loss = loss
        self.efficient = efficient

    def forward(
        self,
        embeddings,
        labels=None,
        indices_tuple=None,
        ref_emb=None,
        ref_labels=None,
        enqueue_mask=None,
    ):
        if not is_distributed():
            warnings.warn(
                "DistributedLossWrapper is used without an initialised torch.distributed "
                "process group: computing the plain loss",
                stacklevel=2,
            )
            return self._plain_call(
                embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
            )
        processes = dist.get_world_size()
        if processes <= 1:
            return self._plain_call(
                embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
            )
        if isinstance(self.loss, CrossBatchMemory):
            forward = self._forward_cross_batch_efficient if self.efficient else self._forward_cross_batch
            return forward(embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask) * processes
        all_emb, all_labels, all_ref_emb, all_ref_labels, labels = gather_emb_and_ref(
            embeddings, labels, ref_emb, ref_labels
        )
        if not self.efficient:
            loss = self.loss(all_emb, all_labels, indices_tuple, all_ref_emb, all_ref_labels)
            return loss * processes
        if all_labels is not None:
            all_labels = select_ref_or_regular(all_labels, all_ref_labels)
        all_emb = select_ref_or_regular(all_emb, all_ref_emb)
        if indices_tuple is None:
            indices_tuple = get_indices_tuple(labels, all_labels, relation=self.loss.label_relation)
        return self.loss(embeddings, labels, indices_tuple, all_emb, all_labels) * processes

    def _plain_call(self, embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask):
        if isinstance(self.loss, CrossBatchMemory):
            # By keyword: CrossBatchMemory's fourth argument is enqueue_mask, not ref_emb.
            return self.loss(embeddings, labels, indices_tuple, enqueue_mask=enqueue_mask)
        return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def _forward_cross_batch(
        self, embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
    ):
        if ref_emb is not None or ref_labels is not None:
            raise ValueError(
                "CrossBatchMemory keeps its own reference set: ref_emb/ref_labels must be None"
            )
        all_emb, all_labels, _ = gather(embeddings, labels)
        enqueue_mask = gather_enqueue_mask(enqueue_mask, embeddings.device)
        return self.loss(all_emb, all_labels, indices_tuple, enqueue_mask)

    def _forward_cross_batch_efficient(
        self, embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
    ):
        """Local anchors against a memory that every process fills with the same rows: the
        global batch in rank order (only its masked rows with ``enqueue_mask``, whose unmasked
        local rows are then the anchors). Without a mask, an anchor's own copy is at its global
        row, and that pairing is left out, as in the single-process memory."""
        if ref_emb is not None or ref_labels is not None:
            raise ValueError(
                "CrossBatchMemory keeps its own reference set: ref_emb/ref_labels must be None"
            )
        if indices_tuple is not None:
            raise ValueError(
                "DistributedLossWrapper(efficient=True) around CrossBatchMemory forms the pairs of "
                "the local rows with the memory itself: indices_tuple must be None"
            )
        if labels is None:
            raise MissingInputError("CrossBatchMemory needs labels")
        labels = c_f.to_device(labels, device=embeddings.device)
        parts = all_gather_rows(embeddings.detach())
        everyone, everyone_labels = torch.cat(parts), torch.cat(all_gather_rows(labels))
        if enqueue_mask is None:
            offset = sum(len(part) for part in parts[: dist.get_rank()])
            own_rows = offset + torch.arange(len(embeddings), device=embeddings.device)
            return self.loss.compare_with_memory(embeddings, labels, everyone, everyone_labels, own_rows)
        enqueue_mask = c_f.to_device(enqueue_mask, device=embeddings.device)
        queued = torch.cat(all_gather_rows(enqueue_mask.to(torch.uint8))).bool()  # gloo has no bool
        return self.loss.compare_with_memory(
            embeddings[~enqueue_mask], labels[~enqueue_mask], everyone[queued], everyone_labels[queued]
        )


class DistributedMinerWrapper(torch.nn.Module):
    """Mines the global batch of all processes.

    ``efficient=False``: indices address the gathered batch (local rows first), for a
    ``DistributedLossWrapper(efficient=False)``. ``efficient=True``: anchors are the local rows,
    the others address the gathered batch, self-pairs removed. Without an initialised process
    group this is the plain miner (the reference fails there).
    """

    def __init__(self, miner, efficient=False):
        super().__init__()
        if not isinstance(miner, BaseMiner):
            raise TypeError(
                f"DistributedMinerWrapper needs a miner (BaseMiner), got {type(miner).__name__}"
            )
        self.miner = miner
        self.efficient = efficient

    def forward(self, emb, labels, ref_emb=None, ref_labels=None):
        if world_size() <= 1:
            return self.miner(emb, labels, ref_emb, ref_labels)
        all_emb, all_labels, all_ref_emb, all_ref_labels, labels = gather_emb_and_ref(
            emb, labels, ref_emb, ref_labels
        )
        if not self.efficient:
            return self.miner(all_emb, all_labels, all_ref_emb, all_ref_labels)
        all_labels = select_ref_or_regular(all_labels, all_ref_labels)
        all_emb = select_ref_or_regular(all_emb, all_ref_emb)
        return get_indices_tuple(labels, all_labels, emb, all_emb, self.miner)
