"""The built-in objectives: a data set, a network, and the shared training loop.

Each is a generator function, so nothing -- not even data loading -- happens until the caller
asks for the first epoch. Data is cached per worker process (see :func:`objectives.data.load`),
so the second trial in a reused Ray worker starts training at once. Thread counts are the
caller's business (the Ray worker sets them to the trial's CPU share); nothing here changes them.
Each takes the opt-in ``checkpoint`` (see :mod:`objectives.protocol`): a retried run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from objectives.data import load
from objectives.device import select_device
from objectives.models import CifarResNet, SmallCNN
from objectives.params import Hyperparams
from objectives.protocol import Checkpoint
from objectives.training import train_classifier

# Conv width of SmallCNN: enough for ~98% on digits, small enough for ~10k samples/s on a core.
_CNN_WIDTH = 32


def digits_cnn(
    params: dict[str, Any], checkpoint: Checkpoint | None = None
) -> Iterator[dict[str, Any]]:
    """SmallCNN on scikit-learn's 8x8 digits: the default objective, no download, CPU-friendly."""
    yield from _train(
        "digits", params, lambda bn: SmallCNN(1, 10, _CNN_WIDTH, batchnorm=bn), checkpoint
    )


def mnist_cnn(
    params: dict[str, Any], checkpoint: Checkpoint | None = None
) -> Iterator[dict[str, Any]]:
    """SmallCNN on MNIST from ``$LIANDAN_DATA_ROOT/MNIST``."""
    yield from _train(
        "mnist", params, lambda bn: SmallCNN(1, 10, _CNN_WIDTH, batchnorm=bn), checkpoint
    )


def fashion_mnist_cnn(
    params: dict[str, Any], checkpoint: Checkpoint | None = None
) -> Iterator[dict[str, Any]]:
    """SmallCNN on Fashion-MNIST from ``$LIANDAN_DATA_ROOT/FashionMNIST``."""
    yield from _train(
        "fashion_mnist", params, lambda bn: SmallCNN(1, 10, _CNN_WIDTH, batchnorm=bn), checkpoint
    )


def cifar10_resnet(
    params: dict[str, Any], checkpoint: Checkpoint | None = None
) -> Iterator[dict[str, Any]]:
    """airbench-style ResNet on CIFAR-10 from ``$LIANDAN_DATA_ROOT/cifar-10-batches-py``."""
    yield from _train("cifar10", params, lambda bn: CifarResNet(10, batchnorm=bn), checkpoint)


def _train(
    dataset: str, params: dict[str, Any], build: Callable[[bool], nn.Module],
    checkpoint: Checkpoint | None = None,
) -> Iterator[dict[str, Any]]:
    hp = Hyperparams.from_params(params)
    data = load(dataset, select_device())
    # Seeded right before construction: the initial weights are part of what `seed` fixes.
    torch.manual_seed(hp.seed)
    model = build(hp.batchnorm)
    yield from train_classifier(params, data, model, checkpoint)
