"""Small embedding networks for the ``deepmetric`` command (no torchvision needed)."""

import torch


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
        layers, width = [], input_size
        for hidden in hidden_sizes:
            layers += [torch.nn.Linear(width, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, embedding_size))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


class ConvNet(torch.nn.Module):
    """A small convolutional network for RGB images of any size: ``blocks`` of
    ``Conv3x3 -> BatchNorm -> ReLU -> MaxPool2``, global average pooling, a linear embedding.

    Args:
        channels: output channels of each block.
        embedding_size: width of the output embedding.
        in_channels: image channels (3 for RGB).
    """

    def __init__(self, channels=(32, 64, 128), embedding_size=128, in_channels=3):
        super().__init__()
        layers, width = [], in_channels
        for out in channels:
            layers += [
                torch.nn.Conv2d(width, out, 3, padding=1),
                torch.nn.BatchNorm2d(out),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
            width = out
        self.features = torch.nn.Sequential(*layers)
        self.embed = torch.nn.Linear(width, embedding_size)

    def forward(self, x):
        return self.embed(self.features(x).mean(dim=(2, 3)))


MODELS = {"MLP": MLP, "ConvNet": ConvNet}
