"""Property-based checks over the reducers (hypothesis).

Random per-element, per-pair and per-triplet losses (none, some and all zero; every dtype) must
reduce to a finite scalar that stays attached to the graph, lies between the smallest and the
largest term for the averaging reducers, and backpropagates finite gradients.
"""

import os

import pytest
import torch

from deepmetric import reducers

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NUM_CLASSES = 3
FACTORIES = {
    "AvgNonZeroReducer": reducers.AvgNonZeroReducer,
    "ClassWeightedReducer": lambda: reducers.ClassWeightedReducer(torch.tensor([1.0, 0.5, 2.0])),
    "DivisorReducer": reducers.DivisorReducer,
    "MeanReducer": reducers.MeanReducer,
    "PerAnchorReducer": reducers.PerAnchorReducer,
    "SumReducer": reducers.SumReducer,
    "ThresholdReducer": lambda: reducers.ThresholdReducer(low=0.1, high=2.0),
}
AVERAGING = {"AvgNonZeroReducer", "MeanReducer", "ThresholdReducer"}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def loss_dicts(draw):
    n = draw(st.integers(1, 10))
    kind = draw(st.sampled_from(["element", "pos_pair", "neg_pair", "triplet"]))
    count = draw(st.integers(0, 12)) if kind != "element" else n
    zeros = draw(st.sampled_from(["none", "some", "all"]))
    seed = draw(st.integers(0, 2**16))
    return n, kind, count, zeros, seed


def build(n, kind, count, zeros, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(count, generator=g, dtype=torch.float64) * 3
    if zeros == "all":
        values.zero_()
    elif zeros == "some":
        values[torch.rand(count, generator=g) < 0.5] = 0
    values = values.to(dtype).requires_grad_(True)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    embeddings = torch.randn(n, 4, generator=g, dtype=dtype).requires_grad_(True)
    index = lambda: torch.randint(0, n, (count,), generator=g)  # noqa: E731
    if kind == "element":
        indices = torch.arange(n)
    elif kind == "triplet":
        indices = (index(), index(), index())
    else:
        indices = (index(), index())
    return values, {"loss": {"losses": values, "indices": indices, "reduction_type": kind}}, embeddings, labels


def extra_args(name, loss_dict):
    if name == "DivisorReducer":
        loss_dict["loss"]["divisor"] = 2.0
    return loss_dict


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(case=loss_dicts())
def test_reduction_is_a_finite_attached_scalar(name, dtype, case):
    if name == "PerAnchorReducer" and case[1] == "triplet":
        return  # like the reference, PerAnchorReducer has no triplet reduction
    values, loss_dict, embeddings, labels = build(*case, dtype)
    out = FACTORIES[name]()(extra_args(name, loss_dict), embeddings, labels)
    assert out.numel() == 1 and torch.isfinite(out).all(), f"{name} gave {out}"
    assert out.requires_grad, f"{name} detached the result"
    grads = torch.autograd.grad(out.sum(), [values, embeddings], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    if name in AVERAGING and values.numel() > 0:
        tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
        assert out.item() <= values.max().item() + tol


def test_class_weights_multiply_the_mean_of_element_losses():
    losses = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    loss_dict = {"loss": {"losses": losses, "indices": torch.arange(3), "reduction_type": "element"}}
    out = FACTORIES["ClassWeightedReducer"]()(loss_dict, torch.zeros(3, 2), labels)
    assert float(out) == pytest.approx((1.0 * 1 + 2.0 * 0.5 + 4.0 * 2) / 3)
