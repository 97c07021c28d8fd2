"""Regularization mixins of the losses.

A mixin first sets ``self.<kind>_regularizer`` to a bool placeholder (so ``sub_loss_names()``,
called while the base classes initialise, already knows whether the regularizer exists), then
initialises the rest of the chain, then stores the real regularizer.
"""

import torch

from ..utils import common_functions as c_f
from ..utils.validation import check_class_inputs


class EmbeddingRegularizerMixin:
    """Adds ``"embedding_reg_loss" = embedding_regularizer(embeddings) * embedding_reg_weight``."""

    def __init__(self, embedding_regularizer=None, embedding_reg_weight=1, **kwargs):
        self.embedding_regularizer = embedding_regularizer is not None
        super().__init__(**kwargs)
        self.embedding_regularizer = embedding_regularizer
        self.embedding_reg_weight = embedding_reg_weight
        if self.embedding_regularizer is not None:
            self.add_to_recordable_attributes(name="embedding_reg_weight", is_stat=False)

    def embedding_regularization_loss(self, embeddings):
        loss = 0
        if self.embedding_regularizer is not None:
            loss = self.embedding_regularizer(embeddings) * self.embedding_reg_weight
        return {"losses": loss, "indices": None, "reduction_type": "already_reduced"}

    def add_embedding_regularization_to_loss_dict(self, loss_dict, embeddings):
        if self.embedding_regularizer is not None:
            loss_dict["embedding_reg_loss"] = self.embedding_regularization_loss(embeddings)

    def regularization_loss_names(self):
        return ["embedding_reg_loss"]


class WeightMixin:
    """Stores ``weight_init_func`` (default: ``torch.nn.init.normal_``) for a learnable matrix."""

    def __init__(self, weight_init_func=None, **kwargs):
        super().__init__(**kwargs)
        self.weight_init_func = weight_init_func
        if self.weight_init_func is None:
            self.weight_init_func = self.get_default_weight_init_func()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.normal_)


class WeightRegularizerMixin(WeightMixin):
    """Adds ``"weight_reg_loss" = weight_regularizer(W_rows) * weight_reg_weight``.

    For losses with a learnable class matrix; list it before ``BaseMetricLossFunction``.
    """

    def __init__(self, weight_regularizer=None, weight_reg_weight=1, **kwargs):
        self.weight_regularizer = weight_regularizer is not None
        super().__init__(**kwargs)
        self.weight_regularizer = weight_regularizer
        self.weight_reg_weight = weight_reg_weight
        if self.weight_regularizer is not None:
            self.add_to_recordable_attributes(name="weight_reg_weight", is_stat=False)

    def weight_regularization_loss(self, weights):
        loss = 0
        if self.weight_regularizer is not None:
            loss = self.weight_regularizer(weights) * self.weight_reg_weight
        return {"losses": loss, "indices": None, "reduction_type": "already_reduced"}

    def add_weight_regularization_to_loss_dict(self, loss_dict, weights):
        if self.weight_regularizer is not None:
            loss_dict["weight_reg_loss"] = self.weight_regularization_loss(weights)

    def regularization_loss_names(self):
        return ["weight_reg_loss"]


class ClassMatrixMixin(WeightRegularizerMixin):
    """What the losses with one learnable vector per class share (ArcFace and its relatives,
    NormalizedSoftmax, SoftTriple, ProxyAnchor, ProxyNCA).

    A subclass gives :meth:`class_matrix_shape` (``(num_classes, embedding_size)``) and
    ``cast_types(dtype, device)``; then :meth:`start_class_loss` does the common checks and casts
    at the start of ``compute_loss``, and :meth:`element_loss_dict` builds the usual result.
    """

    def class_matrix_shape(self):
        raise NotImplementedError

    def check_class_inputs(self, embeddings, labels=None):
        """The embedding width must match the class vectors and labels must index classes."""
        num_classes, embedding_size = self.class_matrix_shape()
        check_class_inputs(type(self).__name__, embeddings, labels, num_classes, embedding_size)

    def start_class_loss(self, embeddings, labels, ref_emb, ref_labels):
        """Labels required, no reference set, inputs checked; the class matrix is cast (in place,
        keeping the ``Parameter`` an optimizer holds) to the embeddings' dtype and device."""
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        self.check_class_inputs(embeddings, labels)
        self.cast_types(embeddings.dtype, embeddings.device)

    def element_loss_dict(self, losses, embeddings, class_vectors):
        """``{"loss": one loss per embedding}`` in the embeddings' dtype, plus the weight
        regularization of ``class_vectors`` (one row per class vector) when there is one."""
        loss_dict = {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, class_vectors)
        return loss_dict
