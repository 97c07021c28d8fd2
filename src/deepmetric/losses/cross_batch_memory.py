"""Cross-batch memory (Wang, Zhang, Huang & Scott, "Cross-Batch Memory for Embedding Learning",
CVPR 2020, https://arxiv.org/abs/1912.06798); with ``enqueue_mask`` also a MoCo-style queue
(He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020)."""

import numbers

import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import MissingInputError, ShapeError, require
from ..utils.module_with_records import ModuleWithRecords
from ..utils.pair_masks import PairMasks
from ..utils.validation import check_embeddings, check_labels
from .base_loss_wrapper import TUPLE_LOSSES, BaseLossWrapper
from .generic_pair_loss import GenericPairLoss


class CrossBatchMemory(BaseLossWrapper, ModuleWithRecords):
    """Compares each batch with a FIFO queue of the embeddings (and labels) of past batches.

    ``forward(embeddings, labels, indices_tuple=None, enqueue_mask=None)``:

    1. the rows to enqueue (all rows, or those where ``enqueue_mask`` is True) are written,
       detached, at positions ``(queue_idx + arange(B)) % memory_size`` of the memory, and
       ``queue_idx`` advances by ``B`` (modulo ``memory_size``);
    2. the anchors are all rows (no mask) or the rows where ``enqueue_mask`` is False;
    3. the reference set ``(E_mem, L_mem)`` is the first ``queue_idx`` memory rows until the
       memory has wrapped around once, then the whole memory;
    4. the tuple is ``miner(anchors, anchor_labels, E_mem, L_mem)`` when a miner is given, else
       every (anchor, memory row) pair; without a mask, each anchor's pairing with its own copy
       in the memory is removed from the positives. A user ``indices_tuple`` (not allowed with
       ``enqueue_mask``) is converted to the same form (pairs or triplets, using the batch labels)
       and appended; its second and third indices address memory rows;
    5. the result is ``loss(anchors, anchor_labels, tuple, E_mem, L_mem)``.

    The memory is made of the buffers ``embedding_memory`` ``(memory_size, embedding_size)`` and
    ``label_memory`` ``(memory_size,)`` (``(memory_size, num_classes)`` for multi-hot labels,
    sized by the first batch), cast to the embeddings' device/dtype and the labels' dtype on
    every call. Positives and negatives follow the wrapped loss's ``label_relation``. The queue
    position (``queue_idx``, ``has_been_filled``) is saved in ``state_dict`` too (as extra
    state), so training resumed from a checkpoint continues with the same memory; a reference
    checkpoint without it loads and keeps the current position.

    Args:
        loss: the wrapped tuple loss; see :meth:`supported_losses` (checked by exact class name).
        embedding_size: width of the embeddings.
        memory_size: number of remembered rows.
        miner: optional miner called with the memory as its reference set.
        **kwargs: ``collect_stats``.
    """

    def __init__(self, loss, embedding_size, memory_size=1024, miner=None, **kwargs):
        super().__init__(loss=loss, **kwargs)
        for name, value in (("embedding_size", embedding_size), ("memory_size", memory_size)):
            require(
                isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0,
                f"CrossBatchMemory needs {name} to be a positive integer, got {value!r}",
            )
        self.loss = loss
        self.miner = miner
        self.embedding_size = int(embedding_size)
        self.memory_size = int(memory_size)
        self.reset_queue()
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "memory_size", "queue_idx"], is_stat=False
        )

    @staticmethod
    def supported_losses():
        return list(TUPLE_LOSSES)

    def forward(self, embeddings, labels, indices_tuple=None, enqueue_mask=None):
        if indices_tuple is not None and enqueue_mask is not None:
            raise ValueError("indices_tuple and enqueue_mask are mutually exclusive")
        self._check_inputs(embeddings, labels, enqueue_mask)
        labels = c_f.to_device(labels, device=embeddings.device)
        if enqueue_mask is not None:
            enqueue_mask = c_f.to_device(enqueue_mask, device=embeddings.device)
            kept, queued = ~enqueue_mask, enqueue_mask
            return self.compare_with_memory(
                embeddings[kept], labels[kept], embeddings[queued], labels[queued]
            )
        own_rows = torch.arange(len(embeddings), device=embeddings.device)
        return self.compare_with_memory(embeddings, labels, embeddings, labels, own_rows, indices_tuple)

    def compare_with_memory(
        self, anchors, anchor_labels, queued, queued_labels, own_rows=None, indices_tuple=None
    ):
        """Steps 1-5 with the anchors and the enqueued rows given apart: ``queued`` rows are
        enqueued, then ``anchors`` are compared with the memory. ``own_rows[i]`` is the row of
        ``queued`` that is anchor ``i``'s own copy (that pairing is removed; ``queued`` must then
        fit in the memory), or None when the anchors have no copy among the enqueued rows (as
        with ``enqueue_mask``). ``forward`` is this call with the batch as both, or split by
        its mask; the distributed wrapper uses it to compare the local rows with a queue of
        every process's rows. Afterwards ``curr_batch_idx`` holds the memory positions of the
        anchors' copies (of the enqueued rows when there are none)."""
        self.reset_stats()
        device = anchors.device
        anchor_labels = c_f.to_device(anchor_labels, device=device)
        queued_labels = c_f.to_device(queued_labels, device=device)
        self.embedding_memory = c_f.to_device(self.embedding_memory, device=device, dtype=anchors.dtype)
        self._fit_label_memory(queued_labels)
        self.label_memory = c_f.to_device(self.label_memory, device=device, dtype=queued_labels.dtype)
        if own_rows is not None:
            require(
                len(queued) <= self.memory_size,
                f"CrossBatchMemory: the rows to enqueue ({len(queued)}) must not be more than "
                f"memory_size={self.memory_size} when the anchors are among them",
            )
        self.add_to_memory(queued, queued_labels, len(queued))
        if own_rows is not None:
            self.curr_batch_idx = self.curr_batch_idx[own_rows]
        if self.has_been_filled:
            E_mem, L_mem = self.embedding_memory, self.label_memory
        else:
            E_mem, L_mem = self.embedding_memory[: self.queue_idx], self.label_memory[: self.queue_idx]

        if len(anchors) == 0 or len(E_mem) == 0:
            # Nothing to compare (only enqueued rows, or an empty memory): a zero on the graph.
            return torch.sum(anchors * 0) + torch.sum(queued * 0)
        indices_tuple = self.create_indices_tuple(
            anchors, anchor_labels, E_mem, L_mem, indices_tuple, own_rows is not None
        )
        return self.loss(anchors, anchor_labels, indices_tuple, E_mem, L_mem)

    def add_to_memory(self, embeddings, labels, batch_size):
        """Writes the rows at the queue position and advances it."""
        self.curr_batch_idx = (
            torch.arange(self.queue_idx, self.queue_idx + batch_size, device=labels.device) % self.memory_size
        )
        # More rows than the memory holds (possible with enqueue_mask): only the last
        # memory_size rows survive a FIFO, and writing them alone avoids duplicate indices.
        keep = slice(max(batch_size - self.memory_size, 0), batch_size)
        self.embedding_memory[self.curr_batch_idx[keep]] = embeddings[keep].detach()
        self.label_memory[self.curr_batch_idx[keep]] = labels[keep].detach()
        # The memory is full once the position wraps around; enqueueing no rows does not fill it
        # (the reference marks it filled then and compares with never-written zero rows).
        if self.queue_idx + batch_size >= self.memory_size:
            self.has_been_filled = True
        self.queue_idx = (self.queue_idx + batch_size) % self.memory_size

    def create_indices_tuple(
        self, embeddings, labels, E_mem, L_mem, input_indices_tuple, do_remove_self_comparisons
    ):
        """The miner's (or all) tuples of the anchors against the memory, plus the user's.

        All pairs for a pair loss come as :class:`PairMasks`: listing every (anchor, memory row)
        pair would cost more than the loss itself.
        """
        relation = self.loss.label_relation
        # With equal labels a row's own copy is never a negative; under another relation (or
        # multi-hot labels) it might be, and is removed from the negatives too.
        by_relation = relation is not None or labels.ndim != 1
        if not self.miner and input_indices_tuple is None and isinstance(self.loss, GenericPairLoss):
            pos, neg = lmu.get_label_masks(labels, L_mem, relation)
            if do_remove_self_comparisons:
                own_copy = (torch.arange(len(labels), device=pos.device), self.curr_batch_idx)
                pos[own_copy] = False
                if by_relation:
                    neg[own_copy] = False
            return PairMasks(pos, neg)
        if self.miner:
            indices_tuple = self.miner(embeddings, labels, E_mem, L_mem)
        else:
            indices_tuple = lmu.get_all_pairs_indices(labels, L_mem, relation)
        if do_remove_self_comparisons:
            indices_tuple = lmu.remove_self_comparisons(indices_tuple, self.curr_batch_idx, self.memory_size)
            if by_relation and len(indices_tuple) == 4:
                a1, p, a2, n = indices_tuple
                keep = n != self.curr_batch_idx[a2]
                indices_tuple = (a1, p, a2[keep], n[keep])
        if input_indices_tuple is not None:
            if len(input_indices_tuple) == 3 and len(indices_tuple) == 4:
                input_indices_tuple = lmu.convert_to_pairs(input_indices_tuple, labels, relation=relation)
            elif len(input_indices_tuple) == 4 and len(indices_tuple) == 3:
                input_indices_tuple = lmu.convert_to_triplets(input_indices_tuple, labels, relation=relation)
            indices_tuple = c_f.concatenate_indices_tuples(indices_tuple, input_indices_tuple)
        return indices_tuple

    def _fit_label_memory(self, labels):
        """Multi-hot labels need a memory row per class set: the memory takes the labels' shape
        while it is empty; later batches must keep it."""
        if self.label_memory.shape[1:] == labels.shape[1:]:
            return
        if self.queue_idx == 0 and not self.has_been_filled:
            self.label_memory = torch.zeros(
                (self.memory_size, *labels.shape[1:]), dtype=labels.dtype, device=labels.device
            )
            return
        raise ShapeError(
            f"CrossBatchMemory holds labels of shape {tuple(self.label_memory.shape[1:])} per row, "
            f"but this batch's labels have shape {tuple(labels.shape[1:])} per row"
        )

    def reset_queue(self):
        """Empties the memory (zeros) and rewinds the queue position."""
        self.register_buffer("embedding_memory", torch.zeros(self.memory_size, self.embedding_size))
        self.register_buffer("label_memory", torch.zeros(self.memory_size, dtype=torch.long))
        self.has_been_filled = False
        self.queue_idx = 0

    def get_extra_state(self):
        return {"queue_idx": int(self.queue_idx), "has_been_filled": bool(self.has_been_filled)}

    def set_extra_state(self, state):
        require(
            isinstance(state, dict) and {"queue_idx", "has_been_filled"} <= set(state),
            f"CrossBatchMemory extra state must be a dict with queue_idx and has_been_filled, got {state!r}",
        )
        queue_idx = int(state["queue_idx"])
        require(
            0 <= queue_idx < self.memory_size,
            f"CrossBatchMemory queue_idx must lie in [0, {self.memory_size}), got {queue_idx}",
        )
        self.queue_idx = queue_idx
        self.has_been_filled = bool(state["has_been_filled"])

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "_extra_state"
        has_position = key in state_dict
        saved_labels = state_dict.get(prefix + "label_memory")
        if torch.is_tensor(saved_labels) and saved_labels.shape != self.label_memory.shape:
            # A memory of multi-hot labels (or of 1-D labels into a multi-hot one): take its shape.
            self.label_memory = torch.zeros_like(saved_labels)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if not has_position and key in missing_keys:
            # A reference checkpoint holds only the buffers: load it, keeping the current position.
            missing_keys.remove(key)

    def _check_inputs(self, embeddings, labels, enqueue_mask):
        check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise MissingInputError("CrossBatchMemory needs labels")
        check_labels(labels, embeddings.shape[0], multi_hot=True)
        if embeddings.shape[1] != self.embedding_size:
            raise ShapeError(
                f"CrossBatchMemory was built with embedding_size={self.embedding_size}, but embeddings "
                f"have {embeddings.shape[1]} columns (shape {tuple(embeddings.shape)})"
            )
        if enqueue_mask is None:
            require(
                len(embeddings) <= self.memory_size,
                f"CrossBatchMemory: the batch ({len(embeddings)} rows) must not be larger than "
                f"memory_size={self.memory_size}",
            )
            return
        if not torch.is_tensor(enqueue_mask) or enqueue_mask.dtype != torch.bool:
            raise TypeError(
                "enqueue_mask must be a torch.bool tensor, got "
                f"{enqueue_mask.dtype if torch.is_tensor(enqueue_mask) else type(enqueue_mask).__name__}"
            )
        require(
            enqueue_mask.shape == (len(embeddings),),
            f"enqueue_mask must have shape ({len(embeddings)},) like the batch, "
            f"got {tuple(enqueue_mask.shape)}",
        )
