"""The base class of every online miner: validation, reference-set handling, output checks."""

import torch

from ..distances.module_with_records_and_distance import ModuleWithRecordsAndDistance
from ..utils import common_functions as c_f
from ..utils.errors import MissingInputError, require
from ..utils.label_relations import check_label_relation
from ..utils.validation import check_loss_inputs, default_ref_labels


class BaseMiner(ModuleWithRecordsAndDistance):
    """``miner(embeddings, labels, ref_emb=None, ref_labels=None)`` -> index tuple.

    A pair miner returns ``(a1, p, a2, n)``: positive pairs ``(a1[i], p[i])`` and negative
    pairs ``(a2[j], n[j])``. A triplet miner returns ``(a, p, n)``. Anchor indices address
    ``embeddings``; the others address ``ref_emb`` (the batch itself when not given, in which
    case an element is never paired with itself). Mining runs under ``no_grad``.

    Args:
        collect_stats: record statistics (``None``: ``c_f.COLLECT_STATS``).
        distance: how embeddings are compared (default: L2 distance of normalised rows).
        label_relation: which labels count as the same (``deepmetric.utils.label_relations``):
            ``f(labels_a, labels_b) -> bool (len(labels_a), len(labels_b))``; default equality
            (or a shared class, for 2-D multi-hot labels).

    Subclasses implement ``mine(embeddings, labels, ref_emb, ref_labels)`` and decide positives
    and negatives with ``self.label_relation`` (the ``lmu`` helpers take it as ``relation``).
    """

    def __init__(self, label_relation=None, **kwargs):
        super().__init__(**kwargs)
        self.label_relation = check_label_relation(type(self).__name__, label_relation)
        self.add_to_recordable_attributes(
            list_of_names=["num_pos_pairs", "num_neg_pairs", "num_triplets"], is_stat=True
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        raise NotImplementedError

    # Miners whose output does not depend on the embeddings' values skip the NaN/Inf scan.
    reads_embedding_values = True

    def output_assertion(self, output):
        """Check the tuple's lengths and set the counters (always, whatever collect_stats)."""
        sizes = [x.shape[0] for x in output]  # (shape[0] costs less than len() on a tensor)
        if len(sizes) == 3:
            self.num_triplets = sizes[0]
            require(
                sizes[1] == sizes[0] == sizes[2],
                f"{type(self).__name__} returned triplet index lists of different lengths: {sizes}",
            )
        elif len(sizes) == 4:
            self.num_pos_pairs, self.num_neg_pairs = sizes[0], sizes[2]
            require(
                sizes[1] == sizes[0] and sizes[3] == sizes[2],
                f"{type(self).__name__} returned pair index lists of mismatched lengths: {sizes}",
            )
        else:
            raise TypeError(
                f"{type(self).__name__} must return a tuple of 3 (triplets) or 4 (pairs) index "
                f"tensors, got {len(sizes)}"
            )

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        self.reset_stats()
        with torch.no_grad():
            if labels is None:
                raise MissingInputError(f"{type(self).__name__} requires labels, got None")
            check_loss_inputs(
                embeddings, labels, ref_emb, ref_labels, self.reads_embedding_values, self.distance,
                multi_hot=True, label_relation=self.label_relation,
            )
            labels = c_f.to_device(labels, embeddings)
            ref_labels = default_ref_labels(labels, ref_emb, ref_labels)
            ref_emb, ref_labels = c_f.set_ref_emb(embeddings, labels, ref_emb, ref_labels, True)
            output = self.mine(embeddings, labels, ref_emb, ref_labels)
        self.output_assertion(output)
        return output


def empty_indices(device, count):
    """``count`` empty long tensors (the result of mining nothing)."""
    return tuple(torch.empty(0, dtype=torch.long, device=device) for _ in range(count))

