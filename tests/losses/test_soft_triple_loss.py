"""SoftTripleLoss: hand-computed values, centre layout, learnable centres (init, optimizer,
dtype, state_dict), weight regularization, miner weights, gradients, bad inputs and the reference."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import DotProductSimilarity, LpDistance
from deepmetric.losses import SoftTripleLoss
from deepmetric.miners import MultiSimilarityMiner
from deepmetric.reducers import DoNothingReducer
from deepmetric.regularizers import SparseCentersRegularizer
from deepmetric.utils import common_functions as c_f

E2 = math.exp(2)
# Class 0 centres: (1, 0), (0, 1); class 1 centres: (-1, 0), (0, -1).
CENTERS = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]


def make(dtype=torch.float64, **kwargs):
    loss = SoftTripleLoss(2, 2, centers_per_class=2, **kwargs).to(dtype)
    loss.fc.data.copy_(torch.tensor(CENTERS, dtype=dtype).t())
    return loss


def class_sims_of_x0():
    # x0 = (1, 0): centre similarities (1, 0) and (-1, 0); soft maximum with 1/gamma = 2.
    return E2 / (E2 + 1), -1 / (E2 + 1)


def test_get_logits_is_a_soft_maximum_over_centres():
    loss = make(gamma=0.5)
    logits = loss.get_logits(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(logits, torch.tensor([class_sims_of_x0()], dtype=torch.float64))
    assert loss.gamma == 2.0


def test_hand_computed(dtype):
    loss = make(dtype=dtype, gamma=0.5, la=3.0, margin=0.1)
    s0, s1 = class_sims_of_x0()
    l0, l1 = 3 * (s0 - 0.1), 3 * s1
    ce_x0 = math.log(math.exp(l0) + math.exp(l1)) - l0
    # x1 = (0, -1) with label 1 mirrors x0: class 1 sims (1, 0)... by symmetry the same loss.
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=dtype)
    out = loss(emb, torch.tensor([0, 1]))
    assert out.dtype == dtype
    assert out.item() == pytest.approx(ce_x0, rel=1e-6)


def test_loss_dict_and_miner_weights():
    loss = make(gamma=0.5, la=3.0, margin=0.1, reducer=DoNothingReducer())
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0])
    # Index 0 appears twice, index 1 once, index 2 never: weights 1, 1/2, 0.
    it = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]))
    out = loss(emb, labels, it)["loss"]
    assert out["reduction_type"] == "element" and out["indices"].tolist() == [0, 1, 2]
    plain = loss(emb, labels)["loss"]["losses"]
    torch.testing.assert_close(out["losses"], plain * torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


def test_centres_layout_init_state_dict_and_records():
    torch.manual_seed(0)
    loss = SoftTripleLoss(3, 5, centers_per_class=4)
    assert loss.fc.shape == (5, 12) and list(loss.state_dict()) == ["fc"]
    # kaiming_uniform_(a=sqrt 5) on (5, 12): bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(12)
    assert loss.fc.abs().max().item() <= 1 / math.sqrt(12) + 1e-6
    custom = SoftTripleLoss(3, 5, weight_init_func=c_f.TorchInitWrapper(torch.nn.init.constant_, val=0.25))
    assert torch.all(custom.fc == 0.25)
    assert set(loss._record_these) >= {"la", "gamma", "margin", "centers_per_class", "num_classes"}
    assert loss.embedding_size == 0  # recorded but never assigned, as in the reference


def test_own_optimizer_moves_the_centres_and_dtype_follows_the_input():
    torch.manual_seed(1)
    loss = SoftTripleLoss(4, 6, centers_per_class=3)
    before = loss.fc.detach().clone()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    loss(torch.randn(12, 6), torch.randint(0, 4, (12,))).backward()
    optimizer.step()
    assert not torch.equal(before, loss.fc.detach())
    parameter = loss.fc
    loss(torch.randn(12, 6, dtype=torch.float64), torch.randint(0, 4, (12,)))
    assert loss.fc is parameter and loss.fc.dtype == torch.float64
    restored = SoftTripleLoss(4, 6, centers_per_class=3).to(torch.float64)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.fc, loss.fc)


def test_weight_regularizer_receives_one_row_per_centre():
    seen = []

    class Spy(SparseCentersRegularizer):
        def forward(self, x):
            seen.append(x.shape)
            return super().forward(x)

    torch.manual_seed(2)
    loss = SoftTripleLoss(3, 4, centers_per_class=2, weight_regularizer=Spy(3, 2), weight_reg_weight=0.1)
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss"]
    emb, labels = torch.randn(6, 4), torch.randint(0, 3, (6,))
    out = loss(emb, labels)
    assert seen == [(6, 4)]
    without = SoftTripleLoss(3, 4, centers_per_class=2)
    without.fc.data.copy_(loss.fc.data)
    reg = 0.1 * Spy(3, 2)(loss.fc.detach().t())
    torch.testing.assert_close(out, without(emb, labels) + reg)


def test_single_sample_is_finite():
    torch.manual_seed(3)
    loss = SoftTripleLoss(3, 4, centers_per_class=2)
    emb = torch.randn(1, 4, requires_grad=True)
    out = loss(emb, torch.tensor([1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_float16():
    torch.manual_seed(4)
    loss = SoftTripleLoss(4, 8, centers_per_class=3)
    emb, labels = torch.randn(16, 8), torch.randint(0, 4, (16,))
    full = loss(emb, labels)
    half = loss(emb.half(), labels)
    assert half.dtype == torch.float16 and loss.fc.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=2e-2)


def test_gradcheck_embeddings_and_centres():
    torch.manual_seed(5)
    loss = SoftTripleLoss(3, 3, centers_per_class=2, la=5).to(torch.float64)
    emb = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    fc = loss.fc.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def fn(e, w):
        return torch.func.functional_call(loss, {"fc": w}, (e, labels))

    assert torch.autograd.gradcheck(fn, (emb, fc))


def test_bad_arguments_and_inputs():
    with pytest.raises(AssertionError, match="is_inverted"):
        SoftTripleLoss(3, 4, distance=LpDistance())
    SoftTripleLoss(3, 4, distance=DotProductSimilarity())  # any similarity is accepted
    loss = SoftTripleLoss(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 5"):
        loss(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="embedding_size=4.*3 columns"):
        loss(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        loss(torch.randn(2, 4))
    with pytest.raises(ValueError, match="ref_emb"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]), ref_emb=torch.randn(2, 4), ref_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="centers_per_class"):
        SoftTripleLoss(3, 4, centers_per_class=0)


@requires_reference
@pytest.mark.parametrize("kwargs", [{}, {"centers_per_class": 3, "la": 10, "gamma": 0.2, "margin": 0.1}])
@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_reference(kwargs, with_miner, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(6)
    ours = SoftTripleLoss(10, 8, **kwargs).to(dtype)
    theirs = ref_losses.SoftTripleLoss(10, 8, **kwargs).to(dtype)
    theirs.fc.data.copy_(ours.fc.data)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 10, (40,))
    it = MultiSimilarityMiner(epsilon=0.3)(emb, labels) if with_miner else None
    a = ours(emb, labels, it)
    g_a = torch.autograd.grad(a, (emb, ours.fc))
    b = theirs(emb, labels, it)
    g_b = torch.autograd.grad(b, (emb, theirs.fc))
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.get_logits(emb), theirs.get_logits(emb), rtol=rtol * 10, atol=atol * 10)
    for x, y in zip(g_a, g_b):
        torch.testing.assert_close(x, y, rtol=rtol * 10, atol=atol * 10)
