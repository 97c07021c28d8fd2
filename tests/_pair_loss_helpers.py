"""Helpers shared by the pair-loss tests (MultiSimilarity, NTXent, SupCon, Circle, lifted, NPairs):
comparison against the reference library on the same inputs, values and gradients."""

import importlib

import torch

from conftest import tolerance
from deepmetric.utils import loss_and_miner_utils as lmu


def build(library, name, distance=None, **kwargs):
    """``name`` from ``library`` ("deepmetric" or "pytorch_metric_learning"); ``distance`` is a
    ``(class name, kwargs)`` pair built from the same library."""
    if distance is not None:
        cls_name, dist_kwargs = distance
        distances = importlib.import_module(f"{library}.distances")
        kwargs["distance"] = getattr(distances, cls_name)(**dist_kwargs)
    return getattr(importlib.import_module(f"{library}.losses"), name)(**kwargs)


def random_batch(n, d, num_classes, dtype, seed, ref_size=None):
    """Embeddings, labels and (optionally) a distinct reference set, all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    call = {}
    if ref_size is not None:
        ref = torch.randn(ref_size, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
        call = {"ref_emb": ref, "ref_labels": torch.randint(0, num_classes, (ref_size,), generator=g)}
    return emb, labels, call


def random_pairs(labels, ref_labels=None, fraction=0.5, seed=0, repeat=True):
    """A miner-like pair tuple: a random subset of all pairs, some repeated (miners may repeat)."""
    g = torch.Generator().manual_seed(seed)
    a1, p, a2, n = lmu.get_all_pairs_indices(labels, ref_labels)

    def subset(x, y):
        keep = torch.rand(len(x), generator=g) < fraction
        x, y = x[keep], y[keep]
        if repeat and len(x) > 0:
            dup = torch.randint(0, len(x), (max(1, len(x) // 4),), generator=g)
            x, y = torch.cat([x, x[dup]]), torch.cat([y, y[dup]])
        return x, y

    return (*subset(a1, p), *subset(a2, n))


def random_triplets(labels, seed=0, count=30):
    g = torch.Generator().manual_seed(seed)
    a, p, n = lmu.get_all_triplets_indices(labels)
    pick = torch.randint(0, len(a), (count,), generator=g)
    return a[pick], p[pick], n[pick]


def value_and_grads(loss, emb, labels, call, indices_tuple=None):
    value = loss(emb, labels, indices_tuple, **call)
    inputs = [emb] + ([call["ref_emb"]] if "ref_emb" in call else [])
    grads = torch.autograd.grad(value, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    return value, grads


def assert_matches_reference(name, emb, labels, call=None, indices_tuple=None, scale=10, **kwargs):
    """Our loss and the reference give the same value and gradients on the same inputs."""
    call = call or {}
    ours = build("deepmetric", name, **kwargs)
    theirs = build("pytorch_metric_learning", name, **kwargs)
    v_ours, g_ours = value_and_grads(ours, emb, labels, call, indices_tuple)
    v_theirs, g_theirs = value_and_grads(theirs, emb, labels, call, indices_tuple)
    rtol, atol = tolerance(emb.dtype)
    assert v_ours.dtype == emb.dtype
    torch.testing.assert_close(v_ours, v_theirs, rtol=rtol * scale, atol=atol * scale)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=rtol * scale, atol=atol * scale)
    return v_ours


def assert_attached_zero(value, emb):
    """The loss is exactly 0, still part of the graph, and backpropagates zeros."""
    assert value.item() == 0
    assert value.requires_grad
    (grad,) = torch.autograd.grad(value, emb)
    assert torch.all(grad == 0)


def assert_matches_reference_in_mode(name, mode, dtype, seed, ref_sizes=None, **kwargs):
    """The reference comparison on a 40 x 8 batch of 5 classes, called as ``mode`` says: "labels"
    (labels only), "pairs" or "triplets" (a random tuple), "ref" (a distinct reference set of 30),
    "ref+pairs" (both); ``ref_sizes`` maps further modes to their reference size."""
    ref_size = {"ref": 30, "ref+pairs": 30, **(ref_sizes or {})}.get(mode)
    emb, labels, call = random_batch(40, 8, 5, dtype, seed=seed, ref_size=ref_size)
    tuples = None
    if mode.endswith("pairs"):
        tuples = random_pairs(labels, call.get("ref_labels"), repeat=True)
    elif mode == "triplets":
        tuples = random_triplets(labels)
    return assert_matches_reference(name, emb, labels, call, tuples, **kwargs)


def assert_matches_reference_with_mined_pairs_and_no_labels(name, dtype):
    """Labels may be left out when a miner's pairs (here MultiSimilarityMiner's, with a reference
    set) are given: the loss then reads positives and negatives from the tuple alone."""
    from deepmetric.miners import MultiSimilarityMiner

    emb, labels, call = random_batch(32, 6, 4, dtype, seed=5, ref_size=20)
    tuples = MultiSimilarityMiner(epsilon=0.2)(emb, labels, call["ref_emb"], call["ref_labels"])
    return assert_matches_reference(name, emb, None, call, tuples)
