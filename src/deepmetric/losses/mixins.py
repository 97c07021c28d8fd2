"""Regularization mixins of the losses.

A mixin first sets ``self.<kind>_regularizer`` to a bool placeholder (so ``sub_loss_names()``,
called while the base classes initialise, already knows whether the regularizer exists), then
initialises the rest of the chain, then stores the real regularizer.
"""

import torch

from ..utils import common_functions as c_f


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
