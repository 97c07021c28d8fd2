"""Learnable parameters initialised from torch's global RNG: the same ``torch.manual_seed``
gives the reference's initial values and leaves the generator where the reference leaves it."""

import pytest
import torch

from conftest import requires_reference
from deepmetric import losses

CASES = {
    "ArcFaceLoss": dict(num_classes=7, embedding_size=5),
    "CosFaceLoss": dict(num_classes=7, embedding_size=5),
    "LargeMarginSoftmaxLoss": dict(num_classes=7, embedding_size=5),
    "SphereFaceLoss": dict(num_classes=7, embedding_size=5),
    "SubCenterArcFaceLoss": dict(num_classes=7, embedding_size=5),
    "NormalizedSoftmaxLoss": dict(num_classes=7, embedding_size=5),
    "ProxyNCALoss": dict(num_classes=7, embedding_size=5),
    "ProxyAnchorLoss": dict(num_classes=7, embedding_size=5),
    "SoftTripleLoss": dict(num_classes=7, embedding_size=5),
    "ManifoldLoss": dict(l=5),
    "P2SGradLoss": dict(num_classes=7, descriptors_dim=5),
}


@requires_reference
@pytest.mark.parametrize("name", sorted(CASES))
def test_initial_parameters_equal_the_reference(name):
    import pytorch_metric_learning.losses as reference

    torch.manual_seed(3)
    theirs = getattr(reference, name)(**CASES[name]).state_dict()
    after_theirs = torch.rand(3)
    torch.manual_seed(3)
    ours = getattr(losses, name)(**CASES[name]).state_dict()
    assert torch.equal(torch.rand(3), after_theirs)
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


@requires_reference
def test_manifold_loss_draws_the_reference_proxy_assignment():
    import pytorch_metric_learning.losses as reference

    embeddings = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    values = []
    for module in (reference, losses):
        torch.manual_seed(1)
        loss = module.ManifoldLoss(l=5, K=4)
        torch.manual_seed(5)  # the assignment of embeddings to proxies is random without indices_tuple
        values.append(loss(embeddings).detach())
    assert torch.equal(values[0].reshape(-1), values[1].reshape(-1))
