"""The face at pytorch-metric-learning's path of the distributed wrappers.

It re-exports names that live in ``deepmetric.distributed``, so that code written for that path
keeps importing; nothing inside deepmetric imports this module.
"""

from ..distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
    all_gather,
    all_gather_embeddings_and_labels,
    gather,
    gather_emb_and_ref,
    gather_enqueue_mask,
    get_indices_tuple,
    select_ref_or_regular,
)
from ..losses import BaseMetricLossFunction, CrossBatchMemory
from ..miners import BaseMiner
from ..ops.gather import all_gather_rows, is_distributed
from . import common_functions as c_f
from . import loss_and_miner_utils as lmu

__all__ = [
    "BaseMetricLossFunction",
    "BaseMiner",
    "CrossBatchMemory",
    "DistributedLossWrapper",
    "DistributedMinerWrapper",
    "all_gather",
    "all_gather_embeddings_and_labels",
    "all_gather_rows",
    "c_f",
    "gather",
    "gather_emb_and_ref",
    "gather_enqueue_mask",
    "get_indices_tuple",
    "is_distributed",
    "lmu",
    "select_ref_or_regular",
]
