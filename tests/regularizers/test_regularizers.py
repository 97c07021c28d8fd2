import math

import pytest
import torch

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from deepmetric.reducers import DivisorReducer, MeanReducer, SumReducer
from deepmetric.regularizers import (
    BaseRegularizer,
    CenterInvariantRegularizer,
    LpRegularizer,
    RegularFaceRegularizer,
    SparseCentersRegularizer,
    ZeroMeanRegularizer,
)


def test_lp_regularizer(dtype):
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=dtype)
    assert LpRegularizer()(x).item() == pytest.approx(3.0)  # (5 + 1) / 2
    assert LpRegularizer(power=2)(x).item() == pytest.approx(13.0)  # (25 + 1) / 2
    assert LpRegularizer(p=1)(x).item() == pytest.approx(4.0)  # (7 + 1) / 2
    reg = LpRegularizer(p=1, power=3)
    assert reg._record_these == ["p", "power"] and reg.p == 1 and reg.power == 3


def test_zero_mean_regularizer(dtype):
    x = torch.tensor([[1.0, -3.0], [2.0, 2.0]], dtype=dtype)
    assert ZeroMeanRegularizer()(x).item() == pytest.approx(3.0)  # (|-2| + |4|) / 2


def test_center_invariant_regularizer(dtype):
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=dtype)
    # squared norms 1 and 9, mean 5: ((−4)^2/4 + 4^2/4) / 2 = 4
    assert CenterInvariantRegularizer()(x).item() == pytest.approx(4.0)


def test_center_invariant_requires_raw_lp_distance():
    with pytest.raises(AssertionError, match="normalize_embeddings"):
        CenterInvariantRegularizer(distance=LpDistance())
    with pytest.raises(ValueError, match="LpDistance"):
        CenterInvariantRegularizer(distance=CosineSimilarity())
    CenterInvariantRegularizer(distance=LpDistance(p=1, normalize_embeddings=False))


def test_regular_face_regularizer(dtype):
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=dtype)
    # cosines: (0,1)=0, (0,2)=(1,2)=1/sqrt2; every row's nearest other row has cos 1/sqrt2
    assert RegularFaceRegularizer()(x).item() == pytest.approx(1 / math.sqrt(2))


def test_regular_face_gradient_flows_and_needs_a_similarity():
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(RegularFaceRegularizer(), (x,))
    with pytest.raises(ValueError, match="similarity"):
        RegularFaceRegularizer(distance=LpDistance())


def test_sparse_centers_regularizer(dtype):
    # 2 classes x 2 centers; rows 0,1 belong to class 0 and rows 2,3 to class 1
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=dtype)
    reg = SparseCentersRegularizer(num_classes=2, centers_per_class=2, collect_stats=True)
    # class 0 pair: cos 0 -> sqrt(2); class 1 pair: cos 1 -> sqrt(tiny) ~ 0; divisor 2 * 2 = 4
    assert reg(x).item() == pytest.approx(math.sqrt(2) / 4, abs=1e-6)
    assert reg.same_class_center_sim == pytest.approx(0.5)
    assert isinstance(reg.reducer, DivisorReducer)
    assert reg.num_classes == 0 and reg.centers_per_class == 0  # as in the reference


def test_sparse_centers_checks_arguments_and_row_count():
    with pytest.raises(ValueError, match="centers_per_class > 1"):
        SparseCentersRegularizer(num_classes=3, centers_per_class=1)
    with pytest.raises(AssertionError):
        SparseCentersRegularizer(num_classes=3, centers_per_class=2, distance=DotProductSimilarity())
    with pytest.raises(ValueError, match="expects 6 rows"):
        SparseCentersRegularizer(num_classes=3, centers_per_class=2)(torch.randn(5, 4))


def test_regularizers_accept_a_reducer():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert LpRegularizer(reducer=SumReducer())(x).item() == pytest.approx(6.0)
    assert isinstance(LpRegularizer().reducer, MeanReducer)


def test_custom_regularizer():
    class MaxAbs(BaseRegularizer):
        def compute_loss(self, x):
            return {"loss": {"losses": x.abs().max(), "indices": None,
                             "reduction_type": "already_reduced"}}

    assert MaxAbs()(torch.tensor([[1.0, -7.0]])).item() == 7.0


@pytest.mark.parametrize("reg", [LpRegularizer(), ZeroMeanRegularizer(),
                                 CenterInvariantRegularizer(), RegularFaceRegularizer()])
def test_regularizers_work_in_float16(reg):
    x = torch.randn(6, 4)
    torch.testing.assert_close(reg(x.half()).float(), reg(x), rtol=2e-2, atol=2e-2)


@requires_reference
@pytest.mark.parametrize("name,kwargs", [
    ("LpRegularizer", {}), ("LpRegularizer", {"p": 1, "power": 2}), ("ZeroMeanRegularizer", {}),
    ("CenterInvariantRegularizer", {}), ("RegularFaceRegularizer", {}),
    ("SparseCentersRegularizer", {"num_classes": 3, "centers_per_class": 4}),
])
def test_matches_reference(name, kwargs, dtype):
    import pytorch_metric_learning.regularizers as ref

    import deepmetric.regularizers as ours

    torch.manual_seed(0)
    x = torch.randn(12, 5, dtype=dtype, requires_grad=True)
    a = getattr(ours, name)(**kwargs)(x)
    (ga,) = torch.autograd.grad(a, x)
    b = getattr(ref, name)(**kwargs)(x)
    (gb,) = torch.autograd.grad(b, x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)
