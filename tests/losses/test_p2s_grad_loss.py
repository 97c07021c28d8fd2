"""P2SGradLoss: hand-computed values, unit-norm class vectors, dtypes, bad inputs and the
reference library as an oracle."""

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.losses import P2SGradLoss
from deepmetric.reducers import DoNothingReducer


def test_hand_computed_mse_between_cosines_and_one_hot():
    loss = P2SGradLoss(2, 2)
    loss.weight.data = torch.eye(2, dtype=torch.float64)
    emb = torch.tensor([[3.0, 4.0], [0.0, -2.0]], dtype=torch.float64)
    # cosines [0.6, 0.8] (label 0) and [0, -1] (label 1)
    expected = ((0.6 - 1) ** 2 + 0.8**2 + 0**2 + (-1 - 1) ** 2) / 4
    assert loss(emb, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_columns_start_and_stay_unit_norm():
    loss = P2SGradLoss(5, 3)
    torch.testing.assert_close(loss.weight.norm(dim=0), torch.ones(3))
    loss.weight.data *= 4  # e.g. after an optimizer step
    loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))
    torch.testing.assert_close(loss.weight.norm(dim=0), torch.ones(3))


def test_already_reduced_entry_and_parameter_name():
    loss = P2SGradLoss(4, 3, reducer=DoNothingReducer())
    out = loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    assert out["loss"]["reduction_type"] == "already_reduced" and out["loss"]["losses"].ndim == 0
    assert list(loss.state_dict()) == ["weight"] and loss.weight.shape == (4, 3)


def test_state_dict_round_trip_and_optimizer():
    torch.manual_seed(0)
    a, b = P2SGradLoss(4, 3), P2SGradLoss(4, 3)
    b.load_state_dict(a.state_dict())
    emb, labels = torch.randn(9, 4), torch.arange(9) % 3
    torch.testing.assert_close(a(emb, labels), b(emb, labels))
    opt = torch.optim.SGD(a.parameters(), lr=1.0)
    before = a(emb, labels).item()
    for _ in range(10):
        opt.zero_grad()
        a(emb, labels).backward()
        opt.step()
    assert a(emb, labels).item() < before


def test_zero_embedding_gives_a_finite_loss_and_gradient():
    loss = P2SGradLoss(3, 2)
    emb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], requires_grad=True)
    value = loss(emb, torch.tensor([0, 1]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()


def test_gradcheck_embeddings():
    torch.manual_seed(2)
    loss = P2SGradLoss(4, 3).double()
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: loss(x, torch.tensor([0, 1, 2, 0, 2])), (emb,))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_is_finite_and_close_to_float32(half):
    torch.manual_seed(0)
    loss = P2SGradLoss(16, 10)
    emb32, labels = torch.randn(32, 16), torch.randint(0, 10, (32,))
    expected = loss(emb32, labels)
    emb = emb32.to(half).requires_grad_(True)
    value = loss(emb, labels)
    value.backward()
    assert value.dtype == half and loss.weight.dtype == half
    assert torch.isfinite(emb.grad.float()).all()
    torch.testing.assert_close(value.float(), expected, rtol=2e-2, atol=2e-2)


def test_bad_inputs_are_rejected():
    loss = P2SGradLoss(3, 2)
    emb = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"\[0, 2\).*got 2"):
        loss(emb, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="embedding_size=3.*4 columns"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels are required"):
        loss(emb)
    with pytest.raises(ValueError, match="indices_tuple is not supported"):
        loss(emb, torch.tensor([0, 1]), (torch.tensor([0]), torch.tensor([1]), torch.tensor([1])))
    with pytest.raises(ValueError, match="not supported"):
        loss(emb, torch.tensor([0, 1]), ref_emb=emb.clone(), ref_labels=torch.tensor([0, 1]))
    loss.weight.data[:, 1] = 0
    with pytest.raises(AssertionError, match=r"columns \[1\]"):
        loss(emb, torch.tensor([0, 1]))


@requires_reference
def test_matches_reference_values_gradients_and_weights(dtype):
    from pytorch_metric_learning.losses import P2SGradLoss as RefP2SGradLoss

    torch.manual_seed(3)
    ref = RefP2SGradLoss(6, 5).to(dtype)
    torch.manual_seed(3)
    ours = P2SGradLoss(6, 5).to(dtype)
    assert torch.equal(ref.weight, ours.weight)
    g = torch.Generator().manual_seed(4)
    rtol, atol = tolerance(dtype)
    for _step in range(3):  # the renormalisation at every call keeps both in step
        emb = (torch.randn(20, 6, generator=g) * 2).to(dtype)
        labels = torch.randint(0, 5, (20,), generator=g)
        x_ref, x_ours = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
        a, b = ref(x_ref, labels), ours(x_ours, labels)
        a.backward()
        b.backward()
        torch.testing.assert_close(b, a, rtol=rtol * 10, atol=atol * 10)
        torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=rtol * 10, atol=atol * 10)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=rtol * 10, atol=atol * 10)
        torch.testing.assert_close(ours.weight, ref.weight, rtol=rtol, atol=atol)
        with torch.no_grad():
            for loss in (ref, ours):
                loss.weight -= 0.5 * loss.weight.grad
                loss.weight.grad = None


@pytest.mark.parametrize("bad_value", [0.0, float("nan")])
def test_a_column_that_cannot_be_normalised_is_named(bad_value):
    loss = P2SGradLoss(4, 3)
    with torch.no_grad():
        loss.weight[:, 1] = bad_value
    with pytest.raises(ValueError, match=r"columns \[1\]"):
        loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
