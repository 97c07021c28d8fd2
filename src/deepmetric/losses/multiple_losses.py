"""A weighted sum of several losses, each optionally with its own miner."""

import torch

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError, require


class MultipleLosses(torch.nn.Module):
    """``MultipleLosses(losses, miners=None, weights=None)(embeddings, labels, indices_tuple=None)``

        total = sum_k weights[k] * losses[k](embeddings, labels, tuple_k)

    where ``tuple_k = miners[k](embeddings, labels)`` when loss ``k`` has a miner and the passed
    ``indices_tuple`` otherwise. It is a weighted sum, not an average.

    Args:
        losses: a list/tuple of losses (kept as a ``ModuleList``) or a dict (a ``ModuleDict``;
            ``is_dict`` says which).
        miners: optional, the same kind of container as ``losses``: a list of the same length
            whose entries may be None, or a dict whose keys are a subset of the loss keys.
            With miners, ``forward`` must not be given an ``indices_tuple``.
        weights: optional, a list of the same length as ``losses`` or a dict with exactly the
            loss keys; default 1 for every loss.
    """

    def __init__(self, losses, miners=None, weights=None):
        super().__init__()
        if not isinstance(losses, dict) and not c_f.is_list_or_tuple(losses):
            raise TypeError(
                f"MultipleLosses: losses must be a list, tuple or dict, got {type(losses).__name__}"
            )
        self.is_dict = isinstance(losses, dict)
        self.losses = torch.nn.ModuleDict(losses) if self.is_dict else torch.nn.ModuleList(losses)

        if miners is not None:
            self.assertions_if_not_none(miners, match_all_keys=False, name="miners")
            self.miners = torch.nn.ModuleDict(miners) if self.is_dict else torch.nn.ModuleList(miners)
        else:
            self.miners = None

        if weights is not None:
            self.assertions_if_not_none(weights, match_all_keys=True, name="weights")
            self.weights = weights
        else:
            self.weights = {k: 1 for k in self.losses.keys()} if self.is_dict else [1] * len(losses)

    def forward(self, embeddings, labels, indices_tuple=None):
        if self.miners:
            require(
                indices_tuple is None,
                "MultipleLosses was built with miners, which produce the indices_tuple: "
                "do not pass one to forward",
            )
        total_loss = 0
        iterable = self.losses.items() if self.is_dict else enumerate(self.losses)
        for i, loss_func in iterable:
            curr_indices_tuple = self.get_indices_tuple(i, embeddings, labels, indices_tuple)
            total_loss += loss_func(embeddings, labels, curr_indices_tuple) * self.weights[i]
        return total_loss

    def get_indices_tuple(self, i, embeddings, labels, indices_tuple):
        """Loss ``i``'s miner output when it has a miner, else the given ``indices_tuple``."""
        if self.miners:
            has_miner = (i in self.miners) if self.is_dict else (self.miners[i] is not None)
            if has_miner:
                indices_tuple = self.miners[i](embeddings, labels)
        return indices_tuple

    def assertions_if_not_none(self, x, match_all_keys, name="argument"):
        """``x`` (miners or weights) must be the same kind of container as the losses."""
        if x is None:
            return
        if self.is_dict:
            if not isinstance(x, dict):
                raise ArgumentError(
                    f"MultipleLosses: losses is a dict, so {name} must be a dict too, got {type(x).__name__}"
                )
            loss_keys = list(self.losses.keys())
            if match_all_keys:
                require(
                    sorted(x.keys()) == sorted(loss_keys),
                    f"MultipleLosses: {name} must have exactly the loss keys {sorted(loss_keys)}, "
                    f"got {sorted(x.keys())}",
                )
            else:
                unknown = [k for k in x.keys() if k not in loss_keys]
                require(
                    not unknown,
                    f"MultipleLosses: {name} keys must be loss keys {loss_keys}, got unknown keys {unknown}",
                )
        else:
            if not c_f.is_list_or_tuple(x):
                raise ArgumentError(
                    f"MultipleLosses: losses is a list, so {name} must be a list or tuple too, "
                    f"got {type(x).__name__}"
                )
            require(
                len(x) == len(self.losses),
                f"MultipleLosses: {name} must have one entry per loss ({len(self.losses)}), got {len(x)}",
            )
