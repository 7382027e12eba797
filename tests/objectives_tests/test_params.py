from __future__ import annotations

import numpy as np
import pytest

from objectives import DEFAULTS
from objectives.params import Hyperparams
from objectives.protocol import STANDARD_METRICS, metric_problems


def test_defaults_of_the_standard_parameters() -> None:
    assert DEFAULTS == {
        "batch_size": 64,
        "optimizer": "momentum",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
        "decay": "cosine",
        "epochs": 10,
        "batchnorm": True,
        "augment": False,
        "seed": 0,
    }
    assert Hyperparams.from_params({}) == Hyperparams(**DEFAULTS)


def test_values_from_optuna_and_yaml_are_coerced() -> None:
    hp = Hyperparams.from_params(
        {
            "batch_size": np.int64(32),
            "lr": 1,
            "epochs": 3.0,
            "warmup_epochs": np.float32(0.5),
            "batchnorm": "false",
            "augment": np.bool_(True),
            "seed": "7",
            "unrelated": object(),
        }
    )
    assert hp.batch_size == 32 and type(hp.batch_size) is int
    assert hp.lr == 1.0 and type(hp.lr) is float
    assert hp.epochs == 3 and hp.warmup_epochs == 0.5
    assert hp.batchnorm is False and hp.augment is True and hp.seed == 7


def test_every_invalid_value_is_named() -> None:
    with pytest.raises(ValueError) as error:
        Hyperparams.from_params({"batch_size": 2.5, "batchnorm": "maybe", "lr": "fast"})
    message = str(error.value)
    assert "batch_size=2.5" in message and "batchnorm='maybe'" in message
    assert "lr='fast'" in message

    with pytest.raises(ValueError) as error:
        Hyperparams.from_params({"epochs": 0, "lr": -1, "decay": "warm"})
    message = str(error.value)
    assert "epochs=0 must be >= 1" in message and "lr=-1.0 must be >= 0" in message
    assert "decay='warm' is not one of constant, step, linear, cosine, exponential" in message


def test_metric_problems() -> None:
    good = {name: kind(1) for name, kind in STANDARD_METRICS.items()}
    assert metric_problems(good) == []
    assert metric_problems({"val_accuracy": 0.5}) != []
    assert metric_problems({"val_accuracy": 0.5}, required=False) == []
    assert metric_problems({**good, "epoch": True}) == ["epoch=True is not an int"]
    assert metric_problems({**good, "diverged": 0}) == ["diverged=0 is not a bool"]
    assert metric_problems({**good, "val_loss": 1}) == ["val_loss=1 is not a float"]
