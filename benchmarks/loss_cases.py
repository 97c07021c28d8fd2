"""The loss rows of the benchmark grid.

Each case builds the same loss from deepmetric or from the reference library (``lib`` is the
imported top-level package), given the embedding width and number of classes of the row.
``python -m benchmarks`` (``benchmarks/grid.py``) turns every case into rows.
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
    # Rows of the matrix the batch is multiplied with, given (N, num_classes), when that is not
    # the batch itself (class vectors, proxies, centres, memory); None with pair_based=False
    # means no floor is measured.
    floor_width: Callable = None
    # Needs as many samples of every class in the batch (shapes.batch(..., equal_classes=True)).
    equal_classes: bool = False

    def floor_rows(self, n, num_classes):
        """``None`` for ``E @ E.T``, else the row count of the other factor; ``False``: no floor."""
        if self.pair_based:
            return None
        return self.floor_width(n, num_classes) if self.floor_width else False


def _classes(n, c):
    return c


CASES = [
    LossCase("ContrastiveLoss", lambda lib, d, c: lib.losses.ContrastiveLoss()),
    LossCase("TripletMarginLoss", lambda lib, d, c: lib.losses.TripletMarginLoss()),
    LossCase("MultiSimilarityLoss", lambda lib, d, c: lib.losses.MultiSimilarityLoss()),
    LossCase("NTXentLoss", lambda lib, d, c: lib.losses.NTXentLoss()),
    LossCase("SupConLoss", lambda lib, d, c: lib.losses.SupConLoss()),
    LossCase("CircleLoss", lambda lib, d, c: lib.losses.CircleLoss()),
    LossCase("LiftedStructureLoss", lambda lib, d, c: lib.losses.LiftedStructureLoss()),
    LossCase(
        "GeneralizedLiftedStructureLoss", lambda lib, d, c: lib.losses.GeneralizedLiftedStructureLoss()
    ),
    LossCase("NCALoss", lambda lib, d, c: lib.losses.NCALoss()),
    LossCase("NPairsLoss", lambda lib, d, c: lib.losses.NPairsLoss()),
    LossCase("FastAPLoss", lambda lib, d, c: lib.losses.FastAPLoss()),
    # needs equally many samples of every class in the batch
    LossCase("SmoothAPLoss", lambda lib, d, c: lib.losses.SmoothAPLoss(), equal_classes=True),
    LossCase("PNPLoss", lambda lib, d, c: lib.losses.PNPLoss()),
    LossCase("HistogramLoss", lambda lib, d, c: lib.losses.HistogramLoss()),
]
CASES.append(LossCase("MarginLoss", lambda lib, d, c: lib.losses.MarginLoss()))
CASES.append(LossCase("AngularLoss", lambda lib, d, c: lib.losses.AngularLoss()))

# Classification losses with a learnable class matrix (angular-margin family and relatives).
CASES += [
    LossCase(
        "LargeMarginSoftmaxLoss", lambda lib, d, c: lib.losses.LargeMarginSoftmaxLoss(c, d), False, _classes
    ),
    LossCase("SphereFaceLoss", lambda lib, d, c: lib.losses.SphereFaceLoss(c, d), False, _classes),
    LossCase("ArcFaceLoss", lambda lib, d, c: lib.losses.ArcFaceLoss(c, d), False, _classes),
    LossCase("CosFaceLoss", lambda lib, d, c: lib.losses.CosFaceLoss(c, d), False, _classes),
    LossCase(
        "SubCenterArcFaceLoss",
        lambda lib, d, c: lib.losses.SubCenterArcFaceLoss(num_classes=c, embedding_size=d),
        False,
        lambda n, c: 3 * c,  # three sub-centres per class by default
    ),
    LossCase(
        "NormalizedSoftmaxLoss", lambda lib, d, c: lib.losses.NormalizedSoftmaxLoss(c, d), False, _classes
    ),
    LossCase("P2SGradLoss", lambda lib, d, c: lib.losses.P2SGradLoss(d, c), False, _classes),
]
CASES.append(LossCase("TupletMarginLoss", lambda lib, d, c: lib.losses.TupletMarginLoss()))
CASES.append(LossCase("IntraPairVarianceLoss", lambda lib, d, c: lib.losses.IntraPairVarianceLoss()))
CASES.append(
    LossCase(
        "SignalToNoiseRatioContrastiveLoss",
        lambda lib, d, c: lib.losses.SignalToNoiseRatioContrastiveLoss(),
    )
)
CASES.append(LossCase("InstanceLoss", lambda lib, d, c: lib.losses.InstanceLoss()))

# Ranking, margin and proxy losses (rank-b).
CASES += [
    LossCase("RankedListLoss", lambda lib, d, c: lib.losses.RankedListLoss(margin=0.4, Tn=1.0)),
    LossCase(
        "ThresholdConsistentMarginLoss", lambda lib, d, c: lib.losses.ThresholdConsistentMarginLoss()
    ),
    LossCase("DynamicSoftMarginLoss", lambda lib, d, c: lib.losses.DynamicSoftMarginLoss()),
    LossCase("ManifoldLoss", lambda lib, d, c: _LabelsIgnored(lib.losses.ManifoldLoss(d)), pair_based=False),
    LossCase("ProxyAnchorLoss", lambda lib, d, c: lib.losses.ProxyAnchorLoss(c, d), False, _classes),
    LossCase(
        "SoftTripleLoss", lambda lib, d, c: lib.losses.SoftTripleLoss(c, d), False, lambda n, c: 10 * c
    ),
    LossCase("ProxyNCALoss", lambda lib, d, c: lib.losses.ProxyNCALoss(c, d), False, _classes),
]
CASES.append(
    LossCase(
        "CrossBatchMemory",
        lambda lib, d, c: lib.losses.CrossBatchMemory(lib.losses.ContrastiveLoss(), d, memory_size=4096),
        False,
        lambda n, c: 4096,  # the batch against the full memory
    )
)
