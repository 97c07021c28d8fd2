"""pulse_histograms: per-row soft histograms with triangular pulses under masks (FastAPLoss)."""

import torch

from deepmetric.ops import pulse_histograms as pulse_module
from deepmetric.ops.pulse_histograms import pulse_histograms


def test_pulse_histograms_gradcheck():
    torch.manual_seed(1)
    # keep values away from the centres, where the pulses have kinks
    dist = (torch.randint(0, 4, (5, 6)) + 0.1 + 0.8 * torch.rand(5, 6)).double().requires_grad_(True)
    masks = (torch.rand(5, 6) > 0.5, torch.rand(5, 6) > 0.2)
    centres = torch.linspace(0, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda d: pulse_histograms(d, masks, centres, 1.0), (dist,)
    )


def test_pulse_histograms_match_dense_pulses():
    torch.manual_seed(2)
    dist = 4 * torch.rand(7, 9, dtype=torch.float64)
    mask = torch.rand(7, 9) > 0.3
    centres = torch.linspace(0, 4, 11, dtype=torch.float64)
    (hist,) = pulse_histograms(dist, (mask,), centres, 0.4)
    pulses = torch.relu(1 - (dist.unsqueeze(-1) - centres).abs() / 0.4)
    torch.testing.assert_close(hist, (pulses * mask.unsqueeze(-1)).sum(1))


def test_blocks_give_the_same_histograms_and_gradients(monkeypatch):
    torch.manual_seed(3)
    dist = (4 * torch.rand(9, 5, dtype=torch.float64)).requires_grad_(True)
    masks = (torch.rand(9, 5) > 0.5,)
    centres = torch.linspace(0, 4, 6, dtype=torch.float64)
    (whole,) = pulse_histograms(dist, masks, centres, 0.8)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), dist)
    monkeypatch.setattr(pulse_module, "_BLOCK_ELEMENTS", 10)  # two rows per block
    (blocked,) = pulse_histograms(dist, masks, centres, 0.8)
    (g_blocked,) = torch.autograd.grad(blocked.square().sum(), dist)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(g_blocked, g_whole)
