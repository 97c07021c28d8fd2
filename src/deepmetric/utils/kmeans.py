"""Pure-torch k-means: the default clustering for the NMI/AMI metrics (no faiss needed)."""

import math
import operator

import torch

# Scratch bytes for one block of point-to-centroid distances.
_BLOCK_BUDGET_BYTES = 128 * 2**20


class TorchKMeans:
    """Lloyd's k-means with greedy k-means++ seeding (Arthur & Vassilvitskii, "k-means++: The
    Advantages of Careful Seeding", SODA 2007).

    Minimises the inertia ``sum_i min_c ||x_i - mu_c||^2``. Seeding draws each next centre with
    probability proportional to the squared distance to the nearest centre already chosen,
    keeping the best of ``2 + floor(ln k)`` candidates (as scikit-learn does); then Lloyd
    iterations alternate "assign each point to its nearest centre" and "move each centre to the
    mean of its points" until assignments stop changing or ``niter`` is reached. An empty
    cluster is re-seeded with the point farthest from its centre. With ``nredo > 1`` the run with
    the lowest inertia wins.

    ``kmeans(x, nmb_clusters)`` -> int64 tensor of cluster ids, one per row of ``x``, on
    ``x``'s device: the same call as the reference's ``FaissKMeans``. Distances are computed in
    blocks of rows, so memory stays ``O(block x nmb_clusters)``. All random draws come from a
    ``torch.Generator`` seeded with ``seed`` on the CPU, so results are deterministic for a given
    seed (up to floating-point differences between devices).

    Args:
        niter: maximum Lloyd iterations per run (faiss's default is 25; the reference's
            AccuracyCalculator uses 20).
        nredo: independent runs (different seeds drawn from ``seed``); the best is kept.
        seed: random seed.
        tol: stop when the relative inertia improvement of an iteration is below this.
        init: ``"k-means++"`` (default) or ``"random"`` (distinct points drawn uniformly, as
            faiss does; cheaper when ``nmb_clusters`` is in the thousands, where k-means++
            seeding costs about as much as ``2 + ln k`` Lloyd iterations).
    """

    def __init__(self, niter=20, nredo=1, seed=0, tol=0.0, init="k-means++"):
        for name, value in (("niter", niter), ("nredo", nredo)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if not isinstance(tol, (int, float)) or tol < 0:
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        if init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++' or 'random', got {init!r}")
        self.init = init
        self.niter = niter
        self.nredo = nredo
        self.seed = seed
        self.tol = float(tol)
        self.centroids = None
        self.inertia = None

    def __call__(self, x, nmb_clusters):
        x, nmb_clusters = _validate(x, nmb_clusters)
        device = x.device
        data = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.seed)
        best = None
        for _ in range(self.nredo):
            if self.init == "random":
                chosen = torch.randperm(data.shape[0], generator=generator)[:nmb_clusters]
                centroids = data[chosen.to(device)].clone()
            else:
                centroids = _kmeans_plus_plus(data, nmb_clusters, generator)
            labels, centroids, inertia = _lloyd(data, centroids, self.niter, self.tol)
            if best is None or inertia < best[2]:
                best = (labels, centroids, inertia)
        labels, self.centroids, self.inertia = best
        return labels.to(device=device, dtype=torch.long)


def _validate(x, nmb_clusters):
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor, got shape {tuple(x.shape)}")
    if isinstance(nmb_clusters, bool):
        raise ValueError(f"nmb_clusters must be a positive int, got {nmb_clusters!r}")
    try:
        nmb_clusters = operator.index(nmb_clusters)
    except TypeError:
        raise ValueError(f"nmb_clusters must be a positive int, got {nmb_clusters!r}") from None
    if nmb_clusters < 1:
        raise ValueError(f"nmb_clusters must be a positive int, got {nmb_clusters!r}")
    if nmb_clusters > x.shape[0]:
        raise ValueError(f"nmb_clusters={nmb_clusters} exceeds the number of points ({x.shape[0]})")
    if not torch.isfinite(x.float() if not x.is_floating_point() else x).all():
        raise ValueError("x contains NaN or Inf values")
    return x, nmb_clusters


def _sq_dists(x, centroids, centroid_sq=None):
    """``||x_i - c_j||^2`` via the matmul expansion, clamped at 0."""
    if centroid_sq is None:
        centroid_sq = (centroids * centroids).sum(dim=1)
    mat = torch.addmm(centroid_sq.unsqueeze(0), x, centroids.t(), alpha=-2)
    return mat.add_((x * x).sum(dim=1, keepdim=True)).clamp_min_(0)


def _block_rows(n_cols):
    return max(1, _BLOCK_BUDGET_BYTES // (8 * max(1, n_cols)))


def _assign(x, centroids):
    """Nearest centroid (lowest id on ties) and its squared distance, computed in row blocks."""
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.long, device=x.device)
    min_d = torch.empty(n, dtype=x.dtype, device=x.device)
    step = _block_rows(centroids.shape[0])
    for s in range(0, n, step):
        d = _sq_dists(x[s : s + step], centroids)
        min_d[s : s + step], labels[s : s + step] = d.min(dim=1)
    return labels, min_d


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
            # Every point coincides with a chosen centre: any unchosen point will do.
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


def _lloyd(x, centroids, niter, tol):
    k = centroids.shape[0]
    labels, min_d = _assign(x, centroids)
    inertia = float(min_d.sum())
    for _ in range(niter):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        empty = counts == 0
        new_centroids = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        if empty.any():
            # Re-seed empty clusters with the points farthest from their centres.
            far = torch.topk(min_d, int(empty.sum())).indices
            new_centroids[empty] = x[far]
        new_labels, new_min_d = _assign(x, new_centroids)
        new_inertia = float(new_min_d.sum())
        converged = torch.equal(new_labels, labels)
        improvement = (inertia - new_inertia) / inertia if inertia > 0 else 0.0
        centroids, labels, min_d, inertia = new_centroids, new_labels, new_min_d, new_inertia
        if converged or improvement < tol:
            break
    return labels, centroids, inertia
