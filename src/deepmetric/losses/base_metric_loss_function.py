"""The base class of every metric loss: validation, reference-set handling, reduction."""

from ..reducers.module_with_records_and_reducer import ModuleWithRecordsReducerAndDistance
from ..utils import common_functions as c_f
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
    """

    # False for losses that only count how often each row occurs in ``indices_tuple`` (any
    # number of index lists, all addressing the batch), as the reference's miner weights do.
    indices_tuple_is_structured = True

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        raise NotImplementedError

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self.reset_stats()
        check_loss_inputs(embeddings, labels, ref_emb, ref_labels, distance=self.distance)
        if labels is not None:
            labels = c_f.to_device(labels, embeddings)
        ref_labels = default_ref_labels(labels, ref_emb, ref_labels)
        ref_emb, ref_labels = c_f.set_ref_emb(embeddings, labels, ref_emb, ref_labels)
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
