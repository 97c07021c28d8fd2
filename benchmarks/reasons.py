"""Why a row misses a target (see ``benchmarks/targets.py``), in the words the tables print.

Keys are ``(row name, target)``, optionally narrowed by a shape and/or a size:
``(row name, target, shape)``, ``(row name, target, N)`` or ``(row name, target, shape, N)``;
the most specific key wins. Targets are ``"speed"``, ``"floor"``, ``"memory"``, and for the
k-means rows ``"time"`` and ``"quality"``. Every miss in the published tables needs an entry
here; the summary line lists the ones that have none. The floor of a pair-based loss is
``E @ E.T`` (N^2 D multiply-adds); the reasons below say which other work of that size or
larger the loss's definition requires. In a batch with P samples per class (8 on ``easy``,
about 4 on ``sop``, about 20 on ``cub`` at N=2048; ``benchmarks/shapes.py``) an anchor has
P - 1 positives and about N - P negatives.
"""

WHY = {
    ("SmoothAPLoss", "floor"): (
        "the definition needs N x G x N sigmoid terms, G being the number of classes in the batch "
        "(the reference's grouping): 2048 x 256 x 2048 = 1.1e9 at N=2048 with 8 samples per class, "
        "forward and again backward, against 5.4e8 multiply-adds in the floor; memory stays bounded "
        "by computing them in blocks"
    ),
    ("DynamicSoftMarginLoss", "floor"): (
        "every one of the N x (P - 1) x (N - P) triplets (2048 x 7 x 2040 = 29 million with 8 samples "
        "per class) is binned into the running histogram "
        "(interpolated between two bins) and weighted by its CDF value, forward and backward; that "
        "per-triplet work, not the product, sets the time"
    ),
    ("PNPLoss", "floor"): (
        "each positive's rank is a sum of sigmoids over all negatives: queries x positives x N "
        "sigmoid terms (2048 x 8 x 2048 = 34 million with 8 samples per class), forward and "
        "recomputed backward (to keep memory at N^2)"
    ),
    ("AngularLoss", "floor"): (
        "the loss has one exponential per (positive pair, negative): N x (P - 1) x (N - P) (2048 x 7 "
        "x 2040 = 29 million with 8 samples per class), forward and recomputed backward (to keep "
        "memory at N^2), plus index-adds of the pair gradients into the (N, N) matrix"
    ),
    ("FastAPLoss", "floor"): (
        "the soft histograms scatter two weights per pair into per-row histograms and gather them "
        "back in the backward pass; scatter/gather over the N^2 pairs is memory-bound and costs "
        "several products' worth at D=128"
    ),
    ("TripletMarginLoss", "floor"): (
        "the N x (P - 1) x (N - P) triplets (29 million at N=2048 with 8 samples per class) are "
        "summed without listing them, by placing each of the N^2 anchor-negative distances among its "
        "anchor's P - 1 positive bounds: P - 1 comparison passes and two scatter-adds over the (N, N) "
        "matrix, forward and again for the gradient; at D=128 each such pass costs a sizeable "
        "fraction of the floor's three products, and batches with more samples per class need more "
        "passes; the reference lists the triplets"
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
    ("InstanceLoss", "speed", "easy"): (
        "both libraries do the same three N x N x D products (forward, and two for the gradient), "
        "which take 75-80% of the time, and deepmetric sits at 1.7-2.8x the floor; the rest differs "
        "by less than the noise between runs, and the sign flips: an interleaved A/B on a quiet "
        "machine gave 1.11x at N=512 and 1.29x at N=2048"
    ),
    ("IntraPairVarianceLoss", "speed", "easy"): (
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

# Evaluation with NMI and AMI (both AccuracyCalculator rows) clusters the set into as many clusters
# as it has classes; on the shapes with many small classes that k-means alone outweighs the floor.
_KMEANS_WHY = (
    "NMI and AMI need a k-means of the 50,000 embeddings into the set's {c:,} classes: 20 Lloyd "
    "iterations and a final assignment over all points (faiss subsamples only above 256 points per "
    "centroid), 21 x 50,000 x {c:,} x 128 = {ops} multiply-adds, {ratio:.1f} times the 50,000^2 "
    "x 128 = 3.2e11 of the kNN floor; with the kNN products the row is at least {least:.1f} floors, "
    "however fast each part runs"
)
for _shape, _classes in (("sop", 9334), ("early", 5010)):
    _ops = 21 * 50000 * _classes * 128
    _text = _KMEANS_WHY.format(
        c=_classes, ops=f"{_ops:.2g}".replace("e+", "e"), ratio=_ops / 3.2e11, least=1 + _ops / 3.2e11
    )
    for _name in ("AccuracyCalculator()", 'AccuracyCalculator(k="max_bin_count")'):
        WHY[(_name, "floor", _shape, 50000)] = _text


MEDIAN_WHY = {
    "losses": (
        "at D=128 a product costs 128 multiply-adds per entry of the N x N (or N x C) matrix it "
        "makes, while every elementwise pass over that matrix (distances from the products, masks, "
        "margins, exponentials, row reductions, and each of them again in the backward pass) moves "
        "the whole matrix through memory; a dense pair loss needs several such passes and a "
        "classification loss a softmax over N x C, so that at this width most losses, in both "
        "libraries, spend more time in the passes than in the products (at N=4096, D=512 the same "
        "losses are 1.5-2.5x their floor)"
    ),
    "miners": (
        "the floor is one forward product, while a miner's definition is a selection over the N^2 "
        "distances (thresholds against each anchor's hardest pair, sorting, top-k, histograms) "
        "followed by listing the selected pairs or triplets; those passes and the listing, not the "
        "product, set the time, in the reference as well"
    ),
}


def median_why(grid, shape="easy"):
    """Why a grid's median row misses the median target on a shape, or None."""
    return MEDIAN_WHY.get((grid, shape)) or MEDIAN_WHY.get(grid)


def why(name, target, n, shape="easy"):
    """The recorded reason for a miss, the most specific key first."""
    for key in ((name, target, shape, n), (name, target, shape), (name, target, n), (name, target)):
        if key in WHY:
            return WHY[key]
    return None
