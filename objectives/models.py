"""The networks of the built-in objectives, each with a BatchNorm switch (rule R12).

Without BatchNorm every conv gets a bias instead, so switching it off removes normalization
and nothing else.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int, batchnorm: bool) -> list[nn.Module]:
    # With BatchNorm a conv bias is redundant (BN's shift replaces it).
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not batchnorm)
    norm: list[nn.Module] = [nn.BatchNorm2d(out_channels)] if batchnorm else []
    return [conv, *norm]


class SmallCNN(nn.Module):
    """Three 3x3 conv layers, one 2x2 max-pool, global average pooling and a linear classifier.

    The pool follows the first conv so that the two wider convs run at a quarter of the pixels:
    the same network then trains fast on 8x8 digits and on 28x28 MNIST on one CPU core.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, batchnorm: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(in_channels, width, batchnorm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width, batchnorm),
            nn.ReLU(inplace=True),
            *_conv_block(2 * width, 2 * width, batchnorm),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ResidualGroup(nn.Module):
    """conv -> pool -> norm -> act, then a residual conv -> norm -> act: airbench's ConvGroup."""

    def __init__(self, in_channels: int, out_channels: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv1, *norm1 = _conv_block(in_channels, out_channels, batchnorm)
        self.norm1 = norm1[0] if norm1 else nn.Identity()
        self.conv2, *norm2 = _conv_block(out_channels, out_channels, batchnorm)
        self.norm2 = norm2[0] if norm2 else nn.Identity()
        # Pool before normalizing: BN then sees the statistics of what the next layer gets, at a
        # quarter of the cost.
        self.pool = nn.MaxPool2d(2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        # The residual path keeps gradients flowing even when BatchNorm is off.
        return x + self.act(self.norm2(self.conv2(x)))


class CifarResNet(nn.Module):
    """A small fast ResNet for 32x32 images in the spirit of KellerJordan's airbench94.

    A 3x3 conv stem, three residual groups (each halving the resolution: 32 -> 16 -> 8 -> 4),
    a global max-pool and a bias-free linear head whose logits are scaled down.
    """

    def __init__(
        self,
        num_classes: int = 10,
        batchnorm: bool = True,
        widths: tuple[int, int, int] = (64, 256, 256),
        stem_width: int = 32,
        logit_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_block(3, stem_width, batchnorm), nn.GELU())
        self.groups = nn.Sequential(
            ResidualGroup(stem_width, widths[0], batchnorm),
            ResidualGroup(widths[0], widths[1], batchnorm),
            ResidualGroup(widths[1], widths[2], batchnorm),
        )
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        # Small initial logits keep the softmax unsaturated through the high-LR first steps
        # (airbench94's scaling_factor).
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.groups(self.stem(x)))) * self.logit_scale
