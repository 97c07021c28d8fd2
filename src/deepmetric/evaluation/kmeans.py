"""Pure-torch k-means: faiss' k-means algorithm, for the NMI/AMI metrics when faiss is absent."""

import math
import operator
import time

import torch

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError, SearchInputError
from ._faiss_random import FaissRandomGenerator, rand_perm_prefix

# Scratch bytes for one block of point-to-centroid distances.
_BLOCK_BUDGET_BYTES = 128 * 2**20
# faiss computes squared L2 distances by direct differences below this many query entries
# (queries x dimensions) and by the matmul expansion above (``distance_compute_blas_threshold``).
_DIRECT_DISTANCE_ENTRIES = 128000
# Relative perturbation faiss applies to the two halves of a split cluster.
_SPLIT_EPS = 1.0 / 1024.0
# Seed offset between two faiss restarts (``nredo``).
_REDO_SEED_STRIDE = 15486557


class TorchKMeans:
    """k-means as faiss does it (``faiss.Kmeans``, the reference's ``FaissKMeans``), in torch.

    Minimises the inertia ``sum_i min_c ||x_i - mu_c||^2`` by Lloyd iterations (Lloyd, 1982),
    following faiss' ``Clustering::train`` step by step, with the same random draws (faiss'
    Mersenne Twister, reproduced with numpy), so that for the same data and seed it reaches the
    same clustering as faiss up to float rounding:

    1. More than ``max_points_per_centroid * k`` points: train on the first
       ``max_points_per_centroid * k`` of a random permutation (seed ``seed``).
    2. Initial centroids: ``init="random"`` (faiss' default) takes the first ``k`` points of a
       random permutation (seed ``seed + 1 + 15486557 * redo``); ``init="k-means++"`` draws
       each next centre with probability proportional to its squared distance to the nearest
       chosen one (Arthur & Vassilvitskii, SODA 2007), best of ``2 + floor(ln k)`` candidates.
    3. ``niter`` times: assign every point to its nearest centroid (lowest id on ties), note the
       objective (sum of those squared distances), move every centroid to the mean of its
       points, and split clusters left empty: an empty cluster takes a copy of a donor drawn
       with probability ``(size - 1) / (n - k)``, the two copies nudged apart by a relative
       ``1/1024`` in opposite directions, and they share the donor's size.
       Stop early when the objective's relative change is at most ``tol`` (faiss'
       ``early_stop_threshold``; 0: when it no longer changes at all).
    4. ``nredo`` runs keep the one with the lowest final objective.
    5. Every point (not only the training sample) gets the id of its nearest final centroid.

    With exactly ``k`` training points the points are the centroids.

    ``kmeans(x, nmb_clusters)`` -> int64 tensor of cluster ids, one per row of ``x``, on ``x``'s
    device: the call of the reference's ``FaissKMeans``. float16/bfloat16 and integer inputs are
    clustered in float32, float64 in float64. Distances are computed in blocks of rows, so
    memory stays ``O(block x nmb_clusters)``. After a call, ``centroids`` holds the centroids and
    ``inertia`` the last objective (faiss' ``obj[-1]``).

    Args:
        niter: iterations per run (faiss' default 25; the reference's AccuracyCalculator uses 20).
        nredo: runs; the best is kept.
        seed: random seed (faiss' default 1234). A negative seed draws one from the clock, as
            faiss does (results then vary between calls).
        max_points_per_centroid: training sample size per cluster (faiss' default 256).
        min_points_per_centroid: fewer points per cluster than this logs a warning (39).
        tol: early-stop threshold on the relative change of the objective.
        init: ``"random"`` (faiss) or ``"k-means++"``.
    """

    def __init__(
        self,
        niter=25,
        nredo=1,
        seed=1234,
        max_points_per_centroid=256,
        min_points_per_centroid=39,
        tol=0.0,
        init="random",
    ):
        for name, value in (
            ("niter", niter),
            ("nredo", nredo),
            ("max_points_per_centroid", max_points_per_centroid),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArgumentError(f"{name} must be a positive int, got {value!r}")
        if (
            isinstance(min_points_per_centroid, bool)
            or not isinstance(min_points_per_centroid, int)
            or min_points_per_centroid < 0
        ):
            raise ArgumentError(
                f"min_points_per_centroid must be a non-negative int, got {min_points_per_centroid!r}"
            )
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ArgumentError(f"seed must be an int, got {seed!r}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
            raise ArgumentError(f"tol must be a non-negative number, got {tol!r}")
        if init not in ("random", "k-means++"):
            raise ArgumentError(f"init must be 'random' or 'k-means++', got {init!r}")
        self.niter = niter
        self.nredo = nredo
        self.seed = seed
        self.max_points_per_centroid = max_points_per_centroid
        self.min_points_per_centroid = min_points_per_centroid
        self.tol = float(tol)
        self.init = init
        self.centroids = None
        self.inertia = None

    def __call__(self, x, nmb_clusters):
        x, k = _validate(x, nmb_clusters)
        device = x.device
        data = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        n, dim = data.shape
        c_f.LOGGER.info("running k-means clustering with k=%d", k)
        c_f.LOGGER.info("embedding dimensionality is %d", dim)
        seed = self.seed if self.seed >= 0 else time.time_ns()
        train = data
        if n > k * self.max_points_per_centroid:
            sample = rand_perm_prefix(n, k * self.max_points_per_centroid, seed)
            train = data[torch.tensor(sample, device=device)]
        elif n < k * self.min_points_per_centroid:
            c_f.LOGGER.warning(
                "clustering %d points to %d centroids: please provide at least %d training points",
                n,
                k,
                k * self.min_points_per_centroid,
            )
        if train.shape[0] == k:
            centroids, inertia = train.clone(), 0.0
        else:
            best = None
            for redo in range(self.nredo):
                init_seed = seed + 1 + redo * _REDO_SEED_STRIDE
                centroids = self._initial_centroids(train, k, init_seed)
                centroids, inertia = _iterate(train, centroids, self.niter, self.tol)
                if best is None or inertia < best[1]:
                    best = (centroids, inertia)
            centroids, inertia = best
        self.centroids, self.inertia = centroids, inertia
        labels, _ = _assign(data, centroids)
        return labels.to(device=device, dtype=torch.long)

    def _initial_centroids(self, x, k, seed):
        if self.init == "random":
            chosen = rand_perm_prefix(x.shape[0], k, seed)
            return x[torch.tensor(chosen, device=x.device)].clone()
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed & 0xFFFFFFFF)
        return _kmeans_plus_plus(x, k, generator)

    def __repr__(self):
        return (
            f"TorchKMeans(niter={self.niter}, nredo={self.nredo}, seed={self.seed}, "
            f"max_points_per_centroid={self.max_points_per_centroid}, init={self.init!r})"
        )


def _validate(x, nmb_clusters):
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SearchInputError(f"x must be a tensor or array, got {type(x).__name__}") from exc
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise SearchInputError(f"x must be a non-empty 2-D tensor (points, dims), got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise SearchInputError(f"x must hold real numbers, got dtype {x.dtype}")
    if isinstance(nmb_clusters, bool) or (
        isinstance(nmb_clusters, torch.Tensor) and nmb_clusters.is_floating_point()
    ):
        raise SearchInputError(f"nmb_clusters must be a positive int, got {nmb_clusters!r}")
    try:
        nmb_clusters = operator.index(nmb_clusters)
    except TypeError:
        raise SearchInputError(f"nmb_clusters must be a positive int, got {nmb_clusters!r}") from None
    if nmb_clusters < 1:
        raise SearchInputError(f"nmb_clusters must be a positive int, got {nmb_clusters!r}")
    if nmb_clusters > x.shape[0]:
        raise SearchInputError(
            f"nmb_clusters={nmb_clusters} exceeds the number of points ({x.shape[0]}): k-means "
            "needs at least as many points as clusters"
        )
    if not torch.isfinite(x if x.is_floating_point() else x.float()).all():
        raise SearchInputError("x contains NaN or Inf values")
    return x, nmb_clusters


def _block_rows(n_cols, dim=1):
    return max(1, _BLOCK_BUDGET_BYTES // (8 * max(1, n_cols) * max(1, dim)))


def _sq_dists(x, centroids, centroid_sq=None):
    """``||x_i - c_j||^2`` as faiss computes it for many points: ``(|x|^2 + |c|^2) - 2 x.c``,
    clamped at 0."""
    if centroid_sq is None:
        centroid_sq = (centroids * centroids).sum(dim=1)
    base = (x * x).sum(dim=1, keepdim=True) + centroid_sq.unsqueeze(0)
    return torch.addmm(base, x, centroids.t(), alpha=-2).clamp_min_(0)


def _assign(x, centroids):
    """Nearest centroid (lowest id on ties) and its squared distance, computed in row blocks:
    by direct differences for small inputs, by the matmul expansion otherwise (as faiss)."""
    n, dim = x.shape
    k = centroids.shape[0]
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    min_d = torch.empty(n, dtype=x.dtype, device=x.device)
    if n * dim < _DIRECT_DISTANCE_ENTRIES:
        step = _block_rows(k, dim)
        for s in range(0, n, step):
            diff = x[s : s + step, None, :] - centroids[None]
            min_d[s : s + step], labels[s : s + step] = (diff * diff).sum(dim=2).min(dim=1)
        return labels, min_d
    centroid_sq = (centroids * centroids).sum(dim=1)
    step = _block_rows(k)
    for s in range(0, n, step):
        d = _sq_dists(x[s : s + step], centroids, centroid_sq)
        min_d[s : s + step], labels[s : s + step] = d.min(dim=1)
    return labels, min_d


def _iterate(x, centroids, niter, tol):
    """faiss' iterations from ``centroids``: ``(final centroids, last objective)``."""
    n, k = x.shape[0], centroids.shape[0]
    previous = None
    objective = 0.0
    for _ in range(niter):
        labels, min_d = _assign(x, centroids)
        objective = float(min_d.double().sum())
        # Sums in point order and a multiplication by the reciprocal count, as faiss does.
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        centroids = sums * (1.0 / counts.clamp_min(1)).unsqueeze(1)
        if bool((counts == 0).any()):
            centroids = _split_empty_clusters(centroids, counts.cpu().tolist(), n)
        if previous is not None:
            change = abs(previous - objective) / abs(previous) if previous != 0 else float("inf")
            if change <= tol:
                break
        previous = objective
    return centroids, objective


def _split_empty_clusters(centroids, sizes, n):
    """faiss' ``split_clusters``: every empty cluster, in id order, takes a copy of a donor
    cluster; the two copies are moved apart and share the donor's size.

    The donor is found by walking the clusters cyclically from 0 and accepting cluster ``j``
    with probability ``(size_j - 1) / (n - k)`` (at most ``10 k`` draws, then the largest
    cluster). The draws restart from seed 1234 at every call, as in faiss.
    """
    k, dim = centroids.shape
    centroids = centroids.clone()
    rng = FaissRandomGenerator(1234)
    spread = torch.ones(dim, dtype=centroids.dtype, device=centroids.device)
    spread[0::2] += _SPLIT_EPS
    spread[1::2] -= _SPLIT_EPS
    # faiss divides by the float count of free points, in double precision, then rounds to float.
    free = float(torch.tensor(float(n - k), dtype=torch.float32))
    for empty in range(k):
        if sizes[empty] != 0:
            continue
        donor = None
        j = 0
        for _ in range(10 * k):
            p = float(torch.tensor((sizes[j] - 1.0) / free, dtype=torch.float32))
            if rng.rand_float() < p:
                donor = j
                break
            j = (j + 1) % k
        if donor is None:
            donor = max(range(k), key=lambda c: (sizes[c], -c))
        centroids[empty] = centroids[donor] * spread
        centroids[donor] = centroids[donor] * (2.0 - spread)
        sizes[empty] = _float32(sizes[donor] / 2)
        sizes[donor] = _float32(sizes[donor] - sizes[empty])
    return centroids


def _float32(value):
    return float(torch.tensor(value, dtype=torch.float32))


def _kmeans_plus_plus(x, k, generator):
    n = x.shape[0]
    n_trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    x_sq = (x * x).sum(dim=1)
    centroids = x[first : first + 1].clone()
    closest = _sq_dists(x, centroids).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            # Every point coincides with a chosen centre: any point will do.
            probs = torch.ones(n, dtype=torch.float64)
        else:
            probs = (closest / total).double().cpu()
        candidates = torch.multinomial(probs, n_trials, replacement=True, generator=generator)
        candidates = candidates.to(x.device)
        # (n_trials, n): the new closest-centre distances if each candidate were added.
        cand_d = torch.minimum(_sq_dists(x[candidates], x, x_sq), closest.unsqueeze(0))
        best = int(cand_d.sum(dim=1).argmin())
        centroids = torch.cat([centroids, x[candidates[best]].unsqueeze(0)])
        closest = cand_d[best]
    return centroids
