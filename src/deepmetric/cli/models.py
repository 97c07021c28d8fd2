"""Small embedding networks for the ``deepmetric`` command (no torchvision needed)."""

import torch

from ..utils.errors import ArgumentError


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    return value


def _positive_ints(name, values):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ArgumentError(f"{name} must be a list of positive integers, got {values!r}")
    values = list(values)
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ArgumentError(f"{name} must be a list of positive integers, got {values!r}")
    return values


class MLP(torch.nn.Module):
    """Flattens its input, then ``Linear -> BatchNorm -> ReLU`` per hidden size, then a linear
    embedding layer.

    Args:
        input_size: number of input features (filled in from the dataset by the command).
        hidden_sizes: widths of the hidden layers.
        embedding_size: width of the output embedding.
    """

    def __init__(self, input_size, hidden_sizes=(256,), embedding_size=64):
        super().__init__()
        _positive_int("input_size", input_size)
        _positive_int("embedding_size", embedding_size)
        layers, width = [], input_size
        for hidden in _positive_ints("hidden_sizes", hidden_sizes):
            layers += [torch.nn.Linear(width, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, embedding_size))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


class ConvNet(torch.nn.Module):
    """A small convolutional network for images of any size: one block per entry of ``channels``,
    each ``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2`` (pooling rounds up, so an 8x8 digit still
    has one pixel after three blocks), then global average pooling and a linear embedding.

    Args:
        channels: output channels of each block.
        embedding_size: width of the output embedding.
        in_channels: image channels (filled in from the dataset by the command: 1 for Glyphs and
            Digits, 3 for RGB images).
    """

    def __init__(self, channels=(32, 64, 128), embedding_size=128, in_channels=3):
        super().__init__()
        _positive_int("embedding_size", embedding_size)
        _positive_int("in_channels", in_channels)
        layers, width = [], in_channels
        for out in _positive_ints("channels", channels):
            layers += [
                torch.nn.Conv2d(width, out, 3, padding=1),
                torch.nn.BatchNorm2d(out),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2, ceil_mode=True),
            ]
            width = out
        self.features = torch.nn.Sequential(*layers)
        self.embed = torch.nn.Linear(width, embedding_size)

    def forward(self, x):
        return self.embed(self.features(x).mean(dim=(2, 3)))


MODELS = {"MLP": MLP, "ConvNet": ConvNet}
