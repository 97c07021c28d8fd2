"""Factories of embedding networks: each returns a ``torch.nn.Module`` mapping a batch of items to
a batch of embeddings, ``(batch, embedding_size)``. The command reads the embedding size from the
output, so nothing else has to be declared."""

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """``x + conv(relu(bn(conv(x))))``, then a 2x2 max-pool: a resolution step that keeps the
    gradient path short."""

    def __init__(self, channels_in, channels_out):
        super().__init__()
        self.project = nn.Conv2d(channels_in, channels_out, 1)
        self.body = nn.Sequential(
            nn.Conv2d(channels_out, channels_out, 3, padding=1),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(),
            nn.Conv2d(channels_out, channels_out, 3, padding=1),
            nn.BatchNorm2d(channels_out),
        )
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        x = self.project(x)
        return self.pool(torch.relu(x + self.body(x)))


class ResidualNet(nn.Module):
    def __init__(self, in_channels, widths, embedding_size):
        super().__init__()
        blocks, width = [], in_channels
        for out in widths:
            blocks.append(ResidualBlock(width, out))
            width = out
        self.blocks = nn.Sequential(*blocks)
        self.embed = nn.Linear(width, embedding_size)

    def forward(self, x):
        return self.embed(self.blocks(x).mean(dim=(2, 3)))


def residual_net(embedding_size=64, widths=(16, 32, 64), in_channels=1):
    """A small residual network for grey-level images (Glyphs, Digits); ``in_channels=3`` for RGB."""
    return ResidualNet(in_channels, list(widths), embedding_size)
