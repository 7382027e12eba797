"""The shared suite: every built-in objective and every optimizer keeps the protocol."""

from __future__ import annotations

import math

import pytest

from objectives import resolve
from objectives.builtin import digits_cnn
from objectives.optimizers import OPTIMIZERS
from objectives.protocol import metric_problems

from .conftest import TinyData

# A learning rate that trains SmallCNN on digits in two epochs, per optimizer.
GOOD_LR = {
    "sgd": 0.1,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.03,
    "rmsprop": 1e-3,
    "adam": 2e-3,
    "adamw": 2e-3,
}


def test_every_optimizer_has_a_good_lr_here() -> None:
    assert set(GOOD_LR) == set(OPTIMIZERS)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains_digits(optimizer: str) -> None:
    params = {"optimizer": optimizer, "lr": GOOD_LR[optimizer], "epochs": 2, "batch_size": 32}
    history = list(digits_cnn(params))

    assert [m["epoch"] for m in history] == [1, 2]
    for metrics in history:
        assert metric_problems(metrics) == []
        assert not metrics["diverged"]
        assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
        assert metrics["samples_per_s"] > 0
        assert metrics["epoch_time_s"] > 0
        assert 0 <= metrics["val_accuracy"] <= 1 and 0 <= metrics["train_accuracy"] <= 1
    # Ten classes: chance is 0.1; a working optimizer is far above it after two epochs.
    assert history[-1]["val_accuracy"] > 0.7
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("name", ["mnist_cnn", "fashion_mnist_cnn", "cifar10_resnet"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_torchvision_builtins_keep_the_protocol(
    name: str, batchnorm: bool, tiny_data: TinyData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIANDAN_DATA_ROOT", str(tiny_data.root))
    params = {"epochs": 1, "batch_size": 8, "batchnorm": batchnorm, "augment": True}
    history = list(resolve(name)(params))

    assert len(history) == 1
    assert metric_problems(history[0]) == []
    n_train = 27 if name == "cifar10_resnet" else 54  # 90% of 30 and of 60 samples
    assert history[0]["steps"] == n_train // 8  # the partial last batch is dropped


def test_builtins_ignore_unknown_params() -> None:
    params = {"epochs": 1, "batch_size": 128, "dropout": 0.5, "my_note": "kept by the service"}
    [metrics] = digits_cnn(params)
    assert metric_problems(metrics) == []
