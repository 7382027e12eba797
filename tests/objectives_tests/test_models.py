from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from objectives.models import CifarResNet, SmallCNN


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_small_cnn_shapes(channels: int, size: int, batchnorm: bool) -> None:
    model = SmallCNN(channels, num_classes=7, width=8, batchnorm=batchnorm)
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)
    assert _count(model, nn.Conv2d) == 3 and _count(model, nn.MaxPool2d) == 1


@pytest.mark.parametrize("batchnorm", [True, False])
def test_cifar_resnet_shapes(batchnorm: bool) -> None:
    model = CifarResNet(num_classes=10, batchnorm=batchnorm, widths=(8, 16, 16), stem_width=8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "build",
    [lambda bn: SmallCNN(1, 10, 8, batchnorm=bn), lambda bn: CifarResNet(10, batchnorm=bn)],
)
def test_batchnorm_switch_swaps_norms_for_biases(build: Callable[[bool], nn.Module]) -> None:
    with_bn, without_bn = build(True), build(False)
    convs_with = [m for m in with_bn.modules() if isinstance(m, nn.Conv2d)]
    convs_without = [m for m in without_bn.modules() if isinstance(m, nn.Conv2d)]
    assert _count(with_bn, nn.BatchNorm2d) == len(convs_with)
    assert _count(without_bn, nn.BatchNorm2d) == 0
    assert all(conv.bias is None for conv in convs_with)
    assert all(conv.bias is not None for conv in convs_without)


def test_same_seed_same_initial_weights() -> None:
    torch.manual_seed(5)
    first = SmallCNN(1, 10, 8, batchnorm=True).state_dict()
    torch.manual_seed(5)
    second = SmallCNN(1, 10, 8, batchnorm=True).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
