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
    ("TripletMarginLoss", "floor"): (
        "the 2048 x 7 x 2040 = 29 million triplets are summed without listing them, by placing each "
        "of the N^2 anchor-negative distances among its anchor's 7 positive bounds: 7 comparison "
        "passes and two scatter-adds over the (N, N) matrix, forward and again for the gradient; at "
        "D=128 each such pass costs a sizeable fraction of the floor's three products (at N=4096, "
        "D=512 the row is 2.2x its floor); the reference lists the triplets and is 6x slower"
    ),
    ("RankedListLoss", "floor"): (
        "per (N, N) entry the loss needs two hinges, an exponential weight for every violating "
        "negative and its row normalisation, forward and backward (in one fused node), about 20 "
        "elementwise passes that at D=128 cost as much as the products; 2.7x its floor at N=4096, "
        "D=512"
    ),
    ("HDCMiner", "speed"): (
        "the definition is an ordered top-k of half of all pairs (1.8 million negatives at N=2048, "
        "hardest first); both libraries call the same torch.topk on the same values, which is about "
        "70% of the time, so the two are equal within measurement noise"
    ),
    ("EmbeddingsAlreadyPackagedAsTriplets", "speed"): (
        "the miner does no work on the data: both libraries spend about 16 microseconds of Python "
        "per call; deepmetric's extra microsecond or two is its input validation (tensor types, "
        "shapes, label count), which the reference skips"
    ),
    ("InstanceLoss", "speed"): (
        "both libraries do the same three N x N x D products (forward, and two for the gradient), "
        "which take 75-80% of the time, and deepmetric sits at 1.7-2.8x the floor; the rest differs "
        "by less than the noise between runs, and the sign flips: an interleaved A/B on a quiet "
        "machine gave 1.11x at N=512 and 1.29x at N=2048"
    ),
    ("IntraPairVarianceLoss", "speed"): (
        "measurement noise on a shared 2-core machine: the same code measured 1.3x at N=2048 and "
        "0.89x at N=512 in the full run, then 0.81x at N=2048 and 1.4x at N=512 when re-measured; "
        "an interleaved A/B on a quiet machine gave 1.33x (N=512) and 1.56x (N=2048)"
    ),
    ("MultiSimilarityMiner", "speed"): (
        "the miner compares every pair with its anchor's hardest pair of the other kind and lists "
        "the survivors (most of the N^2 pairs); both libraries do these N^2 comparisons and the "
        "listing with the same torch operations, so the rows tie within noise (not profiled further)"
    ),
}


MEDIAN_WHY = {
    "losses": (
        "no row can beat the reference by more than the reference's time over the floor; at D=128 a "
        "pass over an N^2 (or N x C) matrix costs a good fraction of a product, so the classification, "
        "proxy and dense pair losses, about half the rows, are already 2-6x their floor in the "
        "reference; deepmetric's median row is 4.1x its floor, and its large speed-ups (7-32x, or "
        "the reference out of memory) are on the triplet, margin and list losses, where the "
        "reference lists tuples"
    ),
    "miners": (
        "most miners are selections (top-k, sorting, thresholds over the N^2 distances) that both "
        "libraries do with the same torch primitives, so the speed-up comes only from the triplet "
        "miners and the distance-weighted sampler, where the reference lists or loops over triplets "
        "(4-19x); the selection itself, not the product, sets the time (deepmetric's median miner "
        "is 27x its one-product floor)"
    ),
}


def median_why(grid):
    """Why a grid's median row misses the 3x speed-up target, or None."""
    return MEDIAN_WHY.get(grid)


def why(name, target, n):
    return WHY.get((name, target, n)) or WHY.get((name, target))
