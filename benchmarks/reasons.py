"""Why a row misses a target (see ``benchmarks/targets.py``), in the words the tables print.

Keys are ``(row name, target)`` or ``(row name, target, N)``; targets are ``"speed"``,
``"floor"`` and ``"memory"``. Every miss in the published tables needs an entry here; the
summary line lists the ones that have none. The floor of a pair-based loss is ``E @ E.T``
(N^2 D multiply-adds); the reasons below say which other work of that size or larger the
loss's definition requires.
"""

WHY = {
    ("SmoothAPLoss", "floor"): (
        "the definition needs N x G x N sigmoid terms, G being the number of classes in the batch "
        "(the reference's grouping): 2048 x 256 x 2048 = 1.1e9 at N=2048, forward and again backward, "
        "against 5.4e8 multiply-adds in the floor; memory stays bounded by computing them in blocks"
    ),
    ("DynamicSoftMarginLoss", "floor"): (
        "every one of the 2048 x 7 x 2040 = 29 million triplets is binned into the running histogram "
        "(interpolated between two bins) and weighted by its CDF value, forward and backward; that "
        "per-triplet work, not the product, sets the time"
    ),
    ("PNPLoss", "floor"): (
        "each positive's rank is a sum of sigmoids over all negatives: queries x positives x N = "
        "2048 x 8 x 2048 = 34 million sigmoid terms, forward and recomputed backward (to keep memory "
        "at N^2)"
    ),
    ("AngularLoss", "floor"): (
        "the loss has one exponential per (positive pair, negative): 2048 x 7 pairs x 2040 negatives "
        "= 29 million, forward and recomputed backward (to keep memory at N^2), plus index-adds of "
        "the pair gradients into the (N, N) matrix"
    ),
    ("FastAPLoss", "floor"): (
        "the soft histograms scatter two weights per pair into per-row histograms and gather them "
        "back in the backward pass; scatter/gather over the N^2 pairs is memory-bound and costs "
        "several products' worth at D=128"
    ),
}


MEDIAN_WHY = {}


def median_why(grid):
    """Why a grid's median row misses the 3x speed-up target, or None."""
    return MEDIAN_WHY.get(grid)


def why(name, target, n):
    return WHY.get((name, target, n)) or WHY.get((name, target))
