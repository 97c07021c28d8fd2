"""cosine_cross_entropy: CE over scaled cosines as one node (NormalizedSoftmax, ProxyNCA, Instance)."""

import pytest
import torch

from deepmetric.distances import CosineSimilarity
from deepmetric.losses import InstanceLoss
from deepmetric.losses.cosine_cross_entropy import MAX_CONSTANT_SHIFT, cosine_cross_entropy


def unfused(x, weight, labels, scale):
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(weight, dim=1).T
    return torch.nn.functional.cross_entropy(scale * cos, labels, reduction="none")


def test_hand_computed():
    # cosines of x0 with the class vectors: 1 and 0; scale 2: loss = log(e^2 + e^0) - 2
    x = torch.tensor([[3.0, 0.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    out = cosine_cross_entropy(x, weight, torch.tensor([0]), 2.0)
    expected = torch.log(torch.exp(torch.tensor(2.0)) + 1) - 2
    torch.testing.assert_close(out, expected.reshape(1))


@pytest.mark.parametrize("scale", [1.0, 20.0, -3.0, 64.0, 500.0])  # constant shift and row-max shift
def test_values_and_gradients_equal_the_unfused_form(scale, dtype):
    if dtype == torch.float16:
        pytest.skip("callers cast half precision to float32 first")
    torch.manual_seed(0)
    x = torch.randn(10, 6, dtype=dtype, requires_grad=True)
    weight = torch.randn(4, 6, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (10,))
    a, b = cosine_cross_entropy(x, weight, labels, scale), unfused(x, weight, labels, scale)
    torch.testing.assert_close(a, b)
    assert torch.isfinite(a).all()
    upstream = torch.rand(10, dtype=dtype)
    # A logit of size |scale| carries a rounding error of |scale| * eps, which the softmax in the
    # gradient turns into a relative error of that size whichever order the scale is applied in.
    rtol = max(1.3e-6, abs(scale) * torch.finfo(dtype).eps) if dtype == torch.float32 else None
    atol = 1e-5 if dtype == torch.float32 else None
    for ga, gb in zip(torch.autograd.grad(a, (x, weight), upstream), torch.autograd.grad(b, (x, weight), upstream)):
        torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)
    assert (abs(scale) <= MAX_CONSTANT_SHIFT) == (scale in (1.0, 20.0, -3.0))


def test_gradcheck_including_the_batch_as_its_own_class_matrix():
    torch.manual_seed(1)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda a, w: cosine_cross_entropy(a, w, labels, 3.0), (x, weight))
    assert torch.autograd.gradcheck(lambda a: cosine_cross_entropy(a, a, torch.arange(5), 50.0), (x,))


def test_instance_loss_fused_path_equals_the_plain_path():
    # collect_stats=True keeps the distance (and so InstanceLoss) off the fused path.
    torch.manual_seed(2)
    emb = torch.randn(12, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([4, 4, 7, 7, 7, 1, 1, 9, 9, 9, 9, 4])
    fused = InstanceLoss()(emb, labels)
    plain = InstanceLoss(distance=CosineSimilarity(collect_stats=True))(emb, labels)
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(torch.autograd.grad(fused, emb)[0], torch.autograd.grad(plain, emb)[0])
