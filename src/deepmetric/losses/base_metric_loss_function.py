"""The base class of every metric loss: validation, reference-set handling, reduction."""

from ..reducers.module_with_records_and_reducer import ModuleWithRecordsReducerAndDistance
from ..utils import common_functions as c_f
from ..utils.label_relations import check_label_relation
from ..utils.validation import check_indices_tuple, check_loss_inputs, default_ref_labels
from .mixins import EmbeddingRegularizerMixin


class BaseMetricLossFunction(EmbeddingRegularizerMixin, ModuleWithRecordsReducerAndDistance):
    """``loss(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)``.

    Inputs are validated here, once, for every loss. Without ``ref_emb`` the reference set is
    the batch itself (the same objects), and self-pairs are excluded downstream. Subclasses
    implement ``compute_loss`` and return a loss dict ``{name: {"losses", "indices",
    "reduction_type"}}``; the reducer turns it into a scalar.

    Args:
        collect_stats: record statistics (``None``: ``c_f.COLLECT_STATS``).
        reducer: how per-tuple losses become a scalar (default per loss).
        distance: the distance or similarity to compare embeddings with (default per loss).
        embedding_regularizer: optional regularizer applied to ``embeddings``.
        embedding_reg_weight: its weight.
        label_relation: which labels count as the same (``deepmetric.utils.label_relations``):
            ``f(labels_a, labels_b) -> bool (len(labels_a), len(labels_b))``; default equality
            (or a shared class, for 2-D multi-hot labels). Losses that use labels as class
            indices (``accepts_label_relation = False``) refuse one, and 2-D labels.
    """

    # False for losses that only count how often each row occurs in ``indices_tuple`` (any
    # number of index lists, all addressing the batch), as the reference's miner weights do.
    indices_tuple_is_structured = True
    # False for losses whose labels are class indices (a weight or proxy per class), or whose
    # positives do not come from labels at all: they refuse label_relation and 2-D labels.
    accepts_label_relation = True

    def __init__(self, label_relation=None, **kwargs):
        super().__init__(**kwargs)
        self.label_relation = check_label_relation(type(self).__name__, label_relation)
        if label_relation is not None and not self.accepts_label_relation:
            raise ValueError(
                f"{type(self).__name__} does not take a label_relation: its labels are class "
                "indices (or do not decide its positives)"
            )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        raise NotImplementedError

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self.reset_stats()
        multi_hot = self.accepts_label_relation
        check_loss_inputs(
            embeddings, labels, ref_emb, ref_labels, distance=self.distance, multi_hot=multi_hot,
            label_relation=self.label_relation,
        )
        if labels is not None:
            labels = c_f.to_device(labels, embeddings)
        ref_labels = default_ref_labels(labels, ref_emb, ref_labels)
        ref_emb, ref_labels = c_f.set_ref_emb(embeddings, labels, ref_emb, ref_labels, multi_hot)
        if isinstance(indices_tuple, (tuple, list)):
            indices_tuple = check_indices_tuple(
                indices_tuple, len(embeddings), len(ref_emb), self.indices_tuple_is_structured
            )
        loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        return self.reducer(loss_dict, embeddings, labels)

    def zero_loss(self):
        return {"losses": 0, "indices": None, "reduction_type": "already_reduced"}

    def zero_losses(self):
        return {name: self.zero_loss() for name in self.sub_loss_names()}

    def _sub_loss_names(self):
        return ["loss"]

    def sub_loss_names(self):
        return self._sub_loss_names() + self.all_regularization_loss_names()

    def all_regularization_loss_names(self):
        """Names of the active regularization entries, weight before embedding."""
        names = []
        for base in type(self).__mro__:
            if not base.__name__.endswith("RegularizerMixin"):
                continue
            prefix = base.__name__[: -len("RegularizerMixin")].lower()
            regularizer = getattr(self, f"{prefix}_regularizer", None)
            if regularizer is not None and regularizer is not False:
                names.extend(base.regularization_loss_names(self))
        return names
