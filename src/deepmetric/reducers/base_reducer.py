"""The reducer interface: one ``loss_dict`` entry -> one scalar."""

import torch

from ..utils.errors import ArgumentError, UnknownNameError
from ..utils.module_with_records import ModuleWithRecords
from .terms import ListedTerms, Terms, materialized_entry

REDUCTION_TYPES = ("element", "pos_pair", "neg_pair", "triplet", "already_reduced")
_TUPLE_LENGTHS = {"pos_pair": 2, "neg_pair": 2, "triplet": 3}


def _check_reduction_type(reduction_type):
    if reduction_type not in REDUCTION_TYPES:
        raise UnknownNameError(
            f"unknown reduction_type {reduction_type!r}; expected one of {REDUCTION_TYPES}"
        )


class BaseReducer(ModuleWithRecords):
    """Turns a single-entry ``loss_dict`` into a scalar according to its ``reduction_type``.

    Subclasses implement ``<type>_reduction(losses, indices, embeddings, labels, **kwargs)`` for
    the types they support. A ``losses`` value that is the plain number 0 means "no valid
    tuples": the result is a zero attached to the embeddings' graph, so ``backward()`` works.

    A loss may hand over lazy :class:`~deepmetric.reducers.terms.Terms` instead of listed
    losses. A reduction method marked ``@reduces_terms`` receives terms (listed losses wrapped in
    ``ListedTerms``) and reduces them without listing; any other method receives the listed
    ``losses`` and ``indices`` exactly as the reference builds them.
    """

    def __init__(self, collect_stats=None):
        super().__init__(collect_stats=collect_stats)
        self.add_to_recordable_attributes(name="losses_size", is_stat=True)

    def forward(self, loss_dict, embeddings, labels):
        self.reset_stats()
        if len(loss_dict) != 1:
            raise ArgumentError(
                f"{type(self).__name__} reduces exactly one loss entry, got "
                f"{len(loss_dict)}: {list(loss_dict)}; use MultipleReducers for several"
            )
        loss_info = next(iter(loss_dict.values()))
        if not self.reduces_terms(loss_info["reduction_type"]):
            loss_info = materialized_entry(loss_info)
        losses, indices, reduction_type, kwargs = self.unpack_loss_info(loss_info)
        return self.reduce_the_loss(losses, indices, reduction_type, kwargs, embeddings, labels)

    def unpack_loss_info(self, loss_info):
        return loss_info["losses"], loss_info["indices"], loss_info["reduction_type"], {}

    def reduce_the_loss(self, losses, loss_indices, reduction_type, kwargs, embeddings, labels):
        self.set_losses_size_stat(losses)
        if self.input_is_zero_loss(losses):
            return self.zero_loss(embeddings)
        if isinstance(losses, Terms):
            if len(losses) == 0:
                return self.zero_loss(embeddings)
        elif torch.is_tensor(losses) and losses.numel() == 0 and reduction_type != "already_reduced":
            # No terms at all (for example a miner that found nothing): zero, not the NaN of an
            # empty mean, still attached to both the losses' and the embeddings' graphs.
            return losses.sum() + self.zero_loss(embeddings)
        else:
            self.assert_sizes(losses, loss_indices, reduction_type)
        reduction_func = self.get_reduction_func(reduction_type)
        if self.reduces_terms(reduction_type) and not isinstance(losses, Terms):
            losses = ListedTerms(losses, loss_indices, reduction_type)
        return reduction_func(losses, loss_indices, embeddings, labels, **kwargs)

    def reduces_terms(self, reduction_type):
        """True when ``<reduction_type>_reduction`` is marked ``@reduces_terms``."""
        if reduction_type == "already_reduced" or reduction_type not in REDUCTION_TYPES:
            return False
        return getattr(self.get_reduction_func(reduction_type), "reduces_terms", False)

    def already_reduced_reduction(self, losses, loss_indices, embeddings, labels):
        if not (losses.ndim == 0 or len(losses) == 1):
            raise ArgumentError(
                "an 'already_reduced' loss must be a scalar or have length 1, "
                f"got shape {tuple(losses.shape)}"
            )
        return losses

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def get_reduction_func(self, reduction_type):
        _check_reduction_type(reduction_type)
        return getattr(self, f"{reduction_type}_reduction")

    def assert_sizes(self, losses, loss_indices, reduction_type):
        _check_reduction_type(reduction_type)
        getattr(self, f"assert_sizes_{reduction_type}")(losses, loss_indices)

    def zero_loss(self, embeddings):
        return torch.sum(embeddings * 0)

    def input_is_zero_loss(self, losses):
        return not torch.is_tensor(losses) and losses == 0

    def assert_sizes_already_reduced(self, losses, loss_indices):
        pass

    def assert_sizes_element(self, losses, loss_indices):
        if not torch.is_tensor(loss_indices) or len(losses) != len(loss_indices):
            raise ArgumentError(
                "an 'element' loss needs a tensor of indices with one index per loss value"
            )

    def _assert_tuple_sizes(self, losses, loss_indices, reduction_type):
        length = _TUPLE_LENGTHS[reduction_type]
        ok = isinstance(loss_indices, (list, tuple)) and len(loss_indices) == length
        ok = ok and all(torch.is_tensor(x) and len(x) == len(losses) for x in loss_indices)
        if not ok:
            raise ArgumentError(
                f"a '{reduction_type}' loss needs a tuple of {length} index tensors, each as "
                "long as the losses"
            )

    def assert_sizes_pos_pair(self, losses, loss_indices):
        self._assert_tuple_sizes(losses, loss_indices, "pos_pair")

    def assert_sizes_neg_pair(self, losses, loss_indices):
        self._assert_tuple_sizes(losses, loss_indices, "neg_pair")

    def assert_sizes_triplet(self, losses, loss_indices):
        self._assert_tuple_sizes(losses, loss_indices, "triplet")

    def set_losses_size_stat(self, losses):
        if not self.collect_stats:
            return
        if isinstance(losses, Terms):
            self.losses_size = len(losses)
        elif not torch.is_tensor(losses) or losses.ndim == 0:
            self.losses_size = 1
        else:
            self.losses_size = len(losses)
