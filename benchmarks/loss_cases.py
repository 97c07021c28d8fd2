"""The loss rows of the benchmark grid.

Each case builds the same loss from deepmetric or from the reference library (``lib`` is the
imported top-level package), given the embedding width and number of classes of the row.
Rows are added by each loss family; the harness in ``benchmarks/losses.py`` runs them all.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch


class _LabelsIgnored(torch.nn.Module):
    """Lets losses that take no labels (ManifoldLoss) be called as ``loss(embeddings, labels)``."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, embeddings, labels=None, **kwargs):
        return self.loss(embeddings, **kwargs)


@dataclass(frozen=True)
class LossCase:
    name: str
    make: Callable  # make(lib, embedding_size, num_classes) -> loss module
    pair_based: bool = True  # counts towards the "within Nx of the matmul floor" target


CASES = [
    LossCase("ContrastiveLoss", lambda lib, d, c: lib.losses.ContrastiveLoss()),
    LossCase("TripletMarginLoss", lambda lib, d, c: lib.losses.TripletMarginLoss()),
    LossCase("RankedListLoss", lambda lib, d, c: lib.losses.RankedListLoss(margin=0.4, Tn=1.0)),
    LossCase("ThresholdConsistentMarginLoss", lambda lib, d, c: lib.losses.ThresholdConsistentMarginLoss()),
    LossCase("DynamicSoftMarginLoss", lambda lib, d, c: lib.losses.DynamicSoftMarginLoss()),
    LossCase("ManifoldLoss", lambda lib, d, c: _LabelsIgnored(lib.losses.ManifoldLoss(d)), pair_based=False),
]
