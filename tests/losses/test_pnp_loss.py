"""PNPLoss: hand-computed values for every variant, blocking, dtypes, gradients, edge cases and
the reference library as an oracle."""

import math

import pytest
import torch
from _ranking_helpers import assert_same_as_reference, grad_of

import deepmetric.ops.sigmoid_ranks as ranks_module
from conftest import requires_reference, tolerance
from deepmetric.distances import LpDistance
from deepmetric.losses import PNPLoss
from deepmetric.losses.pnp_loss import _padded_positives
from deepmetric.reducers import DoNothingReducer


def circle(degrees, dtype=torch.float64):
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).to(dtype).requires_grad_(True)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


TRANSFORMS = {
    "O": lambda r: r,
    "Ds": lambda r: math.log(1 + r),
    "Dq": lambda r: (1 + r) ** -2,  # alpha = 2 below
    "Iu": lambda r: (1 + r) * math.log(1 + r),
    "Ib": lambda r: (3 * r - math.log(1 + 3 * r)) / 9,  # b = 3 below
}


@pytest.mark.parametrize("variant", PNPLoss.VARIANTS)
def test_hand_computed_value(variant, dtype):
    # unit vectors at 0, 90, 180 degrees, labels [0, 0, 1]: s01 = 0, s02 = -1, s12 = 0.
    # Queries 0 and 1 (each with positives {0, 1}, negative {2}); with anneal 1:
    #   R(0, 0) = sigma(s02 - s00) = sigma(-2), R(0, 1) = sigma(s02 - s01) = sigma(-1)
    #   R(1, 0) = sigma(s12 - s10) = sigma(0),  R(1, 1) = sigma(s12 - s11) = sigma(-1)
    emb = circle([0, 90, 180], dtype)
    f = TRANSFORMS[variant]
    per_query = [(f(sigmoid(-2)) + f(sigmoid(-1))) / 2, (f(0.5) + f(sigmoid(-1))) / 2]
    expected = sum(per_query) / 2
    if variant == "Dq":
        expected = 1 - expected
    out = PNPLoss(anneal=1, variant=variant, alpha=2, b=3)(emb, torch.tensor([0, 0, 1]))
    assert out.dtype == dtype
    assert out.item() == pytest.approx(expected, rel=1e-5)


def test_loss_dict_is_already_reduced_with_the_queries_as_indices():
    emb = circle([0, 90, 180, 270])
    out = PNPLoss(reducer=DoNothingReducer())(emb, torch.tensor([0, 1, 0, 2]))["loss"]
    assert out["reduction_type"] == "already_reduced"
    assert out["losses"].ndim == 0
    assert out["indices"].tolist() == [0, 2]


def test_sigmoid_argument_is_clamped():
    # s02 - s00 = -2 with anneal 0.01 -> argument -200, clamped to -50: sigma = 1 / (1 + e^50)
    emb = circle([0, 90, 180])
    out = PNPLoss(reducer=DoNothingReducer())(emb, torch.tensor([0, 0, 1]))["loss"]["losses"]
    r00, r01, r10, r11 = 1 / (1 + math.exp(50)), 1 / (1 + math.exp(50)), 0.5, 1 / (1 + math.exp(50))
    assert out.item() == pytest.approx(((r00 + r01) / 2 + (r10 + r11) / 2) / 2, rel=1e-9)


def test_single_class_has_no_negatives_above_any_positive():
    emb = torch.randn(4, 3, requires_grad=True)
    labels = torch.zeros(4, dtype=torch.long)
    assert PNPLoss()(emb, labels).item() == 0
    assert PNPLoss(variant="Dq")(emb, labels).item() == 0


@pytest.mark.parametrize("labels", [[0], [0, 1, 2]], ids=["batch_of_one", "all_distinct"])
def test_no_query_with_a_positive_gives_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = PNPLoss()(emb, torch.tensor(labels))
    assert out.item() == 0 and out.requires_grad
    assert torch.all(grad_of(out, emb) == 0)


def test_padded_positives_list_each_rows_positives_first():
    same = torch.tensor([[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.bool)
    positives, valid = _padded_positives(same)
    assert valid.tolist() == [[True, True, True], [True, True, True], [True, True, False]]
    assert positives[valid].tolist() == [0, 1, 3, 0, 1, 3, 2, 3]
    assert positives[2, 2].item() in (2, 3)  # padding repeats a real positive


def test_blocked_queries_give_the_same_values_and_gradients(monkeypatch):
    torch.manual_seed(0)
    emb = torch.randn(30, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (30,))
    whole = PNPLoss(anneal=0.1)(emb, labels)
    g_whole = grad_of(whole, emb)
    monkeypatch.setattr(ranks_module, "_BLOCK_ELEMENTS", 300)
    blocked = PNPLoss(anneal=0.1)(emb, labels)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(grad_of(blocked, emb), g_whole)


@pytest.mark.parametrize("variant", PNPLoss.VARIANTS)
def test_gradcheck(variant):
    torch.manual_seed(1)
    emb = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3])
    assert torch.autograd.gradcheck(lambda x: PNPLoss(anneal=0.5, variant=variant)(x, labels), (emb,))


def test_float16_matches_float32():
    torch.manual_seed(2)
    emb = torch.randn(24, 8)
    labels = torch.randint(0, 3, (24,))
    full = PNPLoss(anneal=0.1)(emb, labels)
    half = PNPLoss(anneal=0.1)(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=1e-2, atol=1e-2)


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="variant"):
        PNPLoss(variant="X")


def test_distance_must_be_cosine():
    with pytest.raises(AssertionError, match="PNPLoss"):
        PNPLoss(distance=LpDistance())


def test_indices_tuple_is_rejected():
    emb, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    pairs = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="indices_tuple"):
        PNPLoss()(emb, labels, pairs)


def test_reference_set_is_rejected():
    with pytest.raises(ValueError, match="ref_emb"):
        PNPLoss()(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), ref_emb=torch.randn(2, 3),
                  ref_labels=torch.tensor([0, 1]))


def test_labels_are_required():
    with pytest.raises(ValueError, match="labels"):
        PNPLoss()(torch.randn(4, 3))


# ---------------------------------------------------------------- oracle


@requires_reference
@pytest.mark.parametrize("variant", PNPLoss.VARIANTS)
@pytest.mark.parametrize("anneal", [0.01, 0.2])
def test_matches_reference(variant, anneal, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(3)
    emb = torch.randn(40, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 6, (40,))
    kwargs = dict(variant=variant, anneal=anneal, alpha=3, b=1.5)
    assert_same_as_reference(PNPLoss(**kwargs), ref_losses.PNPLoss(**kwargs), (emb, labels), dtype)


@requires_reference
def test_matches_reference_in_float16():
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(4)
    emb = torch.randn(16, 8).half()
    labels = torch.randint(0, 3, (16,))
    rtol, atol = tolerance(torch.float16)
    torch.testing.assert_close(PNPLoss(anneal=0.2)(emb, labels), ref_losses.PNPLoss(anneal=0.2)(emb, labels),
                               rtol=rtol, atol=atol)
