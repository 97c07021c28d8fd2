"""Property-based checks over every loss and reducer (hypothesis).

For random batch sizes (1 upwards), numbers of classes (single-class and all-distinct batches
included), embedding widths, dtypes and optional reference sets, every loss must:
return a finite scalar or raise only a documented ValueError/TypeError; give finite gradients;
keep a zero loss attached to the graph; not depend on the order of the batch (where the loss is
defined without randomness or order-dependent grouping); and agree between float32 and float64.

Profiles: ``HYPOTHESIS_PROFILE=ci`` (default, short) and ``HYPOTHESIS_PROFILE=long`` (``make fuzz``).
"""

import os

import pytest
import torch

from deepmetric import losses

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NUM_CLASSES = 6  # classification losses get this many classes; labels are drawn below it

# name -> constructor taking the embedding width. Losses that are not called as
# loss(embeddings, labels) (wrappers, VICReg, Manifold, CLIP) are checked in their own files.
FACTORIES = {
    "AngularLoss": lambda d: losses.AngularLoss(),
    "ArcFaceLoss": lambda d: losses.ArcFaceLoss(NUM_CLASSES, d),
    "CircleLoss": lambda d: losses.CircleLoss(),
    "ContrastiveLoss": lambda d: losses.ContrastiveLoss(),
    "CosFaceLoss": lambda d: losses.CosFaceLoss(NUM_CLASSES, d),
    "DynamicSoftMarginLoss": lambda d: losses.DynamicSoftMarginLoss(),
    "FastAPLoss": lambda d: losses.FastAPLoss(),
    "GeneralizedLiftedStructureLoss": lambda d: losses.GeneralizedLiftedStructureLoss(),
    "HistogramLoss": lambda d: losses.HistogramLoss(),
    "InstanceLoss": lambda d: losses.InstanceLoss(),
    "IntraPairVarianceLoss": lambda d: losses.IntraPairVarianceLoss(),
    "LargeMarginSoftmaxLoss": lambda d: losses.LargeMarginSoftmaxLoss(NUM_CLASSES, d),
    "LiftedStructureLoss": lambda d: losses.LiftedStructureLoss(),
    "MarginLoss": lambda d: losses.MarginLoss(),
    "MultiSimilarityLoss": lambda d: losses.MultiSimilarityLoss(),
    "NCALoss": lambda d: losses.NCALoss(),
    "NormalizedSoftmaxLoss": lambda d: losses.NormalizedSoftmaxLoss(NUM_CLASSES, d),
    "NPairsLoss": lambda d: losses.NPairsLoss(),
    "NTXentLoss": lambda d: losses.NTXentLoss(),
    "P2SGradLoss": lambda d: losses.P2SGradLoss(d, NUM_CLASSES),
    "PNPLoss": lambda d: losses.PNPLoss(),
    "ProxyAnchorLoss": lambda d: losses.ProxyAnchorLoss(NUM_CLASSES, d),
    "ProxyNCALoss": lambda d: losses.ProxyNCALoss(NUM_CLASSES, d),
    "RankedListLoss": lambda d: losses.RankedListLoss(margin=0.4, Tn=1.0),
    "SignalToNoiseRatioContrastiveLoss": lambda d: losses.SignalToNoiseRatioContrastiveLoss(),
    "SmoothAPLoss": lambda d: losses.SmoothAPLoss(),
    "SoftTripleLoss": lambda d: losses.SoftTripleLoss(NUM_CLASSES, d, centers_per_class=2),
    "SphereFaceLoss": lambda d: losses.SphereFaceLoss(NUM_CLASSES, d),
    "SubCenterArcFaceLoss": lambda d: losses.SubCenterArcFaceLoss(num_classes=NUM_CLASSES, embedding_size=d),
    "SupConLoss": lambda d: losses.SupConLoss(),
    "ThresholdConsistentMarginLoss": lambda d: losses.ThresholdConsistentMarginLoss(),
    "TripletMarginLoss": lambda d: losses.TripletMarginLoss(),
    "TupletMarginLoss": lambda d: losses.TupletMarginLoss(),
}
AVAILABLE = sorted(name for name in FACTORIES if hasattr(losses, name))

# Losses whose value legitimately depends on batch order or on random draws.
ORDER_DEPENDENT = {
    "SmoothAPLoss",  # groups consecutive blocks of rows (reference behaviour)
    "InstanceLoss",  # targets are class ranks in batch order
    "DynamicSoftMarginLoss",  # running histogram state
    "NPairsLoss",  # first positive pair of each label
}
# Losses with a learnable matrix or running state: a fresh object is built per evaluation.
SIZE_TOLERANT_ERRORS = (ValueError, TypeError)


@st.composite
def batches(draw, min_size=1):
    n = draw(st.integers(min_size, 12))
    d = draw(st.integers(2, 6))
    classes = draw(st.sampled_from(["single", "distinct", "few"]))
    if classes == "single":
        labels = [0] * n
    elif classes == "distinct":
        labels = list(range(min(n, NUM_CLASSES))) + [NUM_CLASSES - 1] * max(0, n - NUM_CLASSES)
        labels = labels[:n]
    else:
        labels = draw(st.lists(st.integers(0, min(2, NUM_CLASSES - 1)), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**16))
    return n, d, labels, seed


def make_inputs(n, d, labels, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    return emb, torch.tensor(labels, dtype=torch.long)


def evaluate(name, emb, labels, **kwargs):
    torch.manual_seed(0)
    loss_fn = FACTORIES[name](emb.shape[1]).to(emb.dtype)
    try:
        value = loss_fn(emb, labels, **kwargs)
    except SIZE_TOLERANT_ERRORS as err:
        assert str(err), f"{name} raised {type(err).__name__} without a message"
        return None
    return value


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@given(batch=batches())
def test_finite_loss_and_gradients(name, dtype, batch):
    n, d, labels, seed = batch
    emb, labels = make_inputs(n, d, labels, seed, dtype)
    value = evaluate(name, emb, labels)
    if value is None:
        return
    assert value.ndim == 0 or value.numel() == 1, f"{name} returned shape {tuple(value.shape)}"
    assert torch.isfinite(value).all(), f"{name} returned {value} for labels {labels.tolist()}"
    assert value.requires_grad, f"{name} returned a value detached from the graph"
    (grad,) = torch.autograd.grad(value.sum(), emb, allow_unused=True)
    assert grad is None or torch.isfinite(grad).all(), f"{name} gave non-finite gradients"


@pytest.mark.parametrize("name", AVAILABLE)
@given(batch=batches(min_size=2), ref_size=st.integers(1, 8))
def test_reference_set_inputs(name, batch, ref_size):
    n, d, labels, seed = batch
    emb, labels = make_inputs(n, d, labels, seed, torch.float64)
    ref, ref_labels = make_inputs(ref_size, d, [i % 3 for i in range(ref_size)], seed + 1, torch.float64)
    value = evaluate(name, emb, labels, ref_emb=ref, ref_labels=ref_labels)
    if value is not None:
        assert torch.isfinite(value).all(), f"{name} with ref_emb returned {value}"


@pytest.mark.parametrize("name", [n for n in AVAILABLE if n not in ORDER_DEPENDENT])
@given(batch=batches(min_size=2), perm_seed=st.integers(0, 1000))
def test_batch_order_does_not_matter(name, batch, perm_seed):
    n, d, labels, seed = batch
    emb, labels = make_inputs(n, d, labels, seed, torch.float64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(perm_seed))
    a = evaluate(name, emb, labels)
    b = evaluate(name, emb.detach()[perm].requires_grad_(True), labels[perm])
    if a is None or b is None:
        assert a is None and b is None, f"{name} raised for only one order of the same batch"
        return
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=f"{name} depends on batch order")


@pytest.mark.parametrize("name", AVAILABLE)
@given(batch=batches(min_size=2))
def test_float32_agrees_with_float64(name, batch):
    n, d, labels, seed = batch
    emb64, labels_t = make_inputs(n, d, labels, seed, torch.float64)
    emb32 = emb64.detach().float().requires_grad_(True)
    a, b = evaluate(name, emb64, labels_t), evaluate(name, emb32, labels_t)
    if a is None or b is None:
        return
    # a.double(): SmoothAPLoss returns float32 whatever the input dtype (reference behaviour)
    # The signal-to-noise ratio divides by the variance of a difference, which for nearly equal
    # 2-D rows is ill-conditioned: float32 loses several digits there (the reference's too).
    rtol = 1e-2 if name.startswith("SignalToNoise") else 1e-3
    torch.testing.assert_close(
        b.double(), a.double(), rtol=rtol, atol=1e-3, msg=f"{name}: float32 vs float64"
    )


@pytest.mark.parametrize("name", AVAILABLE)
def test_zero_loss_still_backpropagates(name):
    # One sample per class: no positive pairs; losses that return zero must stay attached.
    emb, labels = make_inputs(3, 4, [0, 1, 2], 0, torch.float32)
    value = evaluate(name, emb, labels)
    if value is None:
        return
    value.sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


EXPONENTIATING = [
    "NTXentLoss",
    "SupConLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "ArcFaceLoss",
    "CosFaceLoss",
    "SphereFaceLoss",
    "LargeMarginSoftmaxLoss",
    "SubCenterArcFaceLoss",
    "PNPLoss",
    "SmoothAPLoss",
]


@pytest.mark.parametrize("name", [n for n in EXPONENTIATING if n in AVAILABLE])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_gives_finite_values_and_gradients(name, dtype):
    # Ordinary inputs: 4 classes x 4 samples (SmoothAP needs equal class sizes), unit-scale rows.
    labels = [c for c in range(4) for _ in range(4)]
    emb, labels_t = make_inputs(16, 8, labels, 0, dtype)
    value = evaluate(name, emb, labels_t)
    assert value is not None, f"{name} rejected an ordinary {dtype} batch"
    assert torch.isfinite(value.float()).all(), f"{name} gave {value} in {dtype}"
    (grad,) = torch.autograd.grad(value.sum(), emb)
    assert torch.isfinite(grad.float()).all(), f"{name} gave non-finite {dtype} gradients"
    reference = evaluate(name, emb.detach().double().requires_grad_(True), labels_t)
    torch.testing.assert_close(value.double(), reference.double(), rtol=5e-2, atol=5e-2)
