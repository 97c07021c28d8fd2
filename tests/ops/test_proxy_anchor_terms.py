"""proxy_anchor_terms: ProxyAnchorLoss's per-proxy log(1 + sum exp) terms in one node."""

import math

import pytest
import torch

from deepmetric.ops.proxy_anchor_terms import proxy_anchor_terms


def reference(sims, labels, log_weights, scale, margin, num_classes):
    """The definition, one proxy and one row at a time."""
    pos, neg = [], []
    for c in range(num_classes):
        pos_terms, neg_terms = [sims.new_zeros(())], [sims.new_zeros(())]
        for i in range(len(labels)):
            if labels[i] == c:
                pos_terms.append(scale * (margin - sims[i, c]) + log_weights[i])
            else:
                neg_terms.append(scale * (margin + sims[i, c]) + log_weights[i])
        pos.append(torch.logsumexp(torch.stack(pos_terms), 0))
        neg.append(torch.logsumexp(torch.stack(neg_terms), 0))
    return torch.stack(pos), torch.stack(neg)


def test_hand_computed():
    sims = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    pos, neg = proxy_anchor_terms(sims, torch.tensor([0]), torch.zeros(1, dtype=torch.float64), 2.0, 0.1, 2)
    torch.testing.assert_close(pos, torch.tensor([math.log(1 + math.exp(2 * (0.1 - 0.5))), 0.0], dtype=torch.float64))
    torch.testing.assert_close(neg, torch.tensor([0.0, math.log(1 + math.exp(2 * (0.1 - 0.5)))], dtype=torch.float64))


@pytest.mark.parametrize("scale", [32.0, -32.0])
def test_equals_the_definition_with_gradients_and_second_derivatives(scale):
    g = torch.Generator().manual_seed(0)
    sims = (2 * torch.rand(8, 4, generator=g, dtype=torch.float64) - 1).requires_grad_(True)
    labels = torch.tensor([0, 1, 1, 3, 0, 3, 3, 1])  # class 2 has no positive
    log_weights = torch.log(torch.rand(8, generator=g, dtype=torch.float64) + 0.5)
    got = proxy_anchor_terms(sims, labels, log_weights, scale, 0.1, 4)
    want = reference(sims, labels, log_weights, scale, 0.1, 4)
    upstream = (torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y)
    (a,) = torch.autograd.grad(got, sims, upstream)
    (b,) = torch.autograd.grad(want, sims, upstream)
    torch.testing.assert_close(a, b)
    small = sims.detach()[:5].clone().requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda s: proxy_anchor_terms(s * 0.1, labels[:5], log_weights[:5], scale, 0.1, 4), (small,)
    )
