"""The face at deepmetric's earlier path of the training checkpoints.

It re-exports names that live in ``deepmetric.training.checkpoint``, so that code written for
that path keeps importing; nothing inside deepmetric imports this module.
"""

from ..training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    get_rng_states,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    set_rng_states,
)

__all__ = [
    "CheckpointError",
    "checkpoint_path",
    "get_rng_states",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_states",
]
