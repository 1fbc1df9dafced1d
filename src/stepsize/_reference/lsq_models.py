"""Models of the LSQ bit-width reproduction that the note's Sequential models do not cover: a
small residual network for MNIST-5k (issue 16, item 6), shared by the benchmark and the tests."""

from __future__ import annotations

__all__ = ["small_resnet"]


def small_resnet(width: float = 1.0, *, in_channels: int = 1, classes: int = 10,
                 channels: tuple[int, int, int] = (16, 32, 64)):
    """A ResNet-8 for 28x28 images: a 3x3 stem, three stages of one basic block each (strides
    1, 2, 2; a 1x1 projection shortcut where the shape changes), global average pooling and one
    linear layer.

    A basic block computes ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` (He et al., "Deep
    Residual Learning for Image Recognition", CVPR 2016); convolutions have no bias (batch norm
    follows each). Stage ``k`` has ``max(4, int(channels[k] * width))`` channels.

    Args:
        width: channel multiplier (> 0).
        in_channels: input channels.
        classes: output logits.
        channels: channels of the three stages at ``width=1``.

    Returns:
        an ``nn.Module``: ``(N, in_channels, H, W)`` -> ``(N, classes)``.

    Example:
        >>> import torch
        >>> small_resnet(0.25)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    import torch.nn.functional as F
    from torch import nn

    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    sizes = [max(4, int(c * width)) for c in channels]

    class BasicBlock(nn.Module):
        def __init__(self, inputs: int, outputs: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(outputs)
            self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(outputs)
            self.shortcut = nn.Sequential()
            if stride != 1 or inputs != outputs:
                self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False),
                                              nn.BatchNorm2d(outputs))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    return nn.Sequential(
        nn.Conv2d(in_channels, sizes[0], 3, 1, 1, bias=False), nn.BatchNorm2d(sizes[0]),
        nn.ReLU(),
        BasicBlock(sizes[0], sizes[0], 1), BasicBlock(sizes[0], sizes[1], 2),
        BasicBlock(sizes[1], sizes[2], 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(sizes[2], classes),
    )
