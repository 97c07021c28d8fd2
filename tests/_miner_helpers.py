"""Helpers shared by the miner tests."""

import importlib

import torch

from deepmetric.distances import LpDistance


def line(*points, dtype=torch.float64):
    """Embeddings on a line: 1-D points, so distances are plain differences."""
    return torch.tensor(points, dtype=dtype).unsqueeze(1)


def raw_l2():
    """L2 distance without normalisation (1-D points stay where they are)."""
    return LpDistance(normalize_embeddings=False)


def as_set(indices):
    """Index tuple -> sorted list of tuples (order-free comparison)."""
    return sorted(zip(*[x.tolist() for x in indices]))


def pairs_as_sets(indices):
    a1, p, a2, n = indices
    return as_set((a1, p)), as_set((a2, n))


def reference_miner(name, distance=None, **kwargs):
    """The same miner from the reference library (the oracle)."""
    if distance is not None:
        distances = importlib.import_module("pytorch_metric_learning.distances")
        kwargs["distance"] = getattr(distances, distance)()
    return getattr(importlib.import_module("pytorch_metric_learning.miners"), name)(**kwargs)


def ours(name, distance=None, **kwargs):
    if distance is not None:
        kwargs["distance"] = getattr(importlib.import_module("deepmetric.distances"), distance)()
    return getattr(importlib.import_module("deepmetric.miners"), name)(**kwargs)


def random_batch(n, d, num_classes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=dtype)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return emb, labels
