"""Second derivatives through the fused autograd nodes (create_graph=True replays plain torch)."""

import pytest
import torch

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import (
    InstanceLoss,
    IntraPairVarianceLoss,
    NormalizedSoftmaxLoss,
    P2SGradLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    RankedListLoss,
)
from deepmetric.ops.fused_backward import replayed_gradients

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def _double(module):
    return module.to(torch.float64)


CASES = {
    "CosineSimilarity": lambda e: CosineSimilarity()(e).sum(),
    "CosineSimilarity(query, ref)": lambda e: (CosineSimilarity()(e[:4], e[2:]) ** 2).sum(),
    "LpDistance(power=2)": lambda e: (LpDistance(power=2)(e) ** 2).sum(),
    "NormalizedSoftmaxLoss": lambda e: _double(_seeded(NormalizedSoftmaxLoss, 3, 4))(e, LABELS),
    "ProxyNCALoss": lambda e: _double(_seeded(ProxyNCALoss, 3, 4))(e, LABELS),
    "InstanceLoss": lambda e: InstanceLoss(gamma=4)(e, LABELS),
    "ProxyAnchorLoss": lambda e: _double(_seeded(ProxyAnchorLoss, 3, 4, alpha=4))(e, LABELS),
    # (LpDistance(power=2): the default power-1 distance goes through cdist, which torch cannot
    # differentiate twice)
    "RankedListLoss": lambda e: RankedListLoss(margin=0.6, Tn=1.5, Tp=0.5, distance=LpDistance(power=2))(e, LABELS),
    "P2SGradLoss": lambda e: _double(_seeded(P2SGradLoss, 4, 3))(e, LABELS),
    "IntraPairVarianceLoss": lambda e: IntraPairVarianceLoss(pos_eps=0.2, neg_eps=0.1)(e, LABELS),
}


def _seeded(cls, *args, **kwargs):
    torch.manual_seed(0)
    return cls(*args, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_second_derivatives_are_exact(name):
    torch.manual_seed(1)
    emb = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    fn = CASES[name]
    assert torch.autograd.gradgradcheck(lambda e: fn(e), (emb,))


def test_gradient_penalty_trains_through_the_fused_cosine():
    # d/de ||d loss / d e||^2 exists and is finite (a gradient-penalty style use)
    emb = torch.randn(5, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(CosineSimilarity()(emb).sum(), emb, create_graph=True)
    (second,) = torch.autograd.grad(grad.pow(2).sum(), emb)
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_replay_gives_a_tensor_used_twice_its_gradient_once():
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    grads = replayed_gradients(lambda a, b: (a * b).sum(), (x, x), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(grads[0], 2 * x)
    assert grads[1] is None


def test_ordinary_backward_keeps_the_closed_form(monkeypatch):
    import deepmetric.ops.masked_squared_hinge as hinge_module
    import deepmetric.ops.unit_rows as unit_rows_module

    def fail(*args):
        raise AssertionError("replayed without create_graph")

    monkeypatch.setattr(unit_rows_module, "replayed_gradients", fail)
    monkeypatch.setattr(hinge_module, "replayed_gradients", fail)
    emb = torch.randn(6, 4, requires_grad=True)
    CosineSimilarity()(emb).sum().backward()
    NormalizedSoftmaxLoss(3, 4)(emb, LABELS).backward()
    IntraPairVarianceLoss()(emb, LABELS).backward()
    assert torch.isfinite(emb.grad).all()
