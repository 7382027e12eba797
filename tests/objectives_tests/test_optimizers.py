from __future__ import annotations

import pytest
import torch

from objectives.optimizers import OPTIMIZERS, make_optimizer


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_names_are_the_protocols() -> None:
    assert OPTIMIZERS == ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.0, "nesterov": False, "weight_decay": 1e-4}),
        ("momentum", torch.optim.SGD, {"momentum": 0.8, "nesterov": False, "weight_decay": 1e-4}),
        ("nesterov", torch.optim.SGD, {"momentum": 0.8, "nesterov": True, "weight_decay": 1e-4}),
        ("adagrad", torch.optim.Adagrad, {"weight_decay": 1e-4}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0, "weight_decay": 1e-4}),
        ("adam", torch.optim.Adam, {"betas": (0.9, 0.999), "weight_decay": 1e-4}),
        ("adamw", torch.optim.AdamW, {"weight_decay": 1e-4}),
    ],
)
def test_builds_the_textbook_optimizer(name: str, cls: type, expected: dict) -> None:
    optimizer = make_optimizer(name, _params(), lr=0.3, momentum=0.8, weight_decay=1e-4)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.3
    for key, value in expected.items():
        assert group[key] == value, key


def test_adamw_decay_is_decoupled_and_adam_decay_is_l2() -> None:
    # With a zero gradient, L2 decay goes through Adam's normalization (a full lr-sized step),
    # while AdamW's decoupled decay shrinks the weight by exactly lr * weight_decay.
    def step(name: str) -> float:
        weight = torch.nn.Parameter(torch.tensor([1.0]))
        optimizer = make_optimizer(name, [weight], lr=0.1, momentum=0.0, weight_decay=0.5)
        weight.grad = torch.zeros(1)
        optimizer.step()
        return weight.item()

    assert step("adamw") == pytest.approx(1.0 - 0.1 * 0.5)
    assert step("adam") == pytest.approx(1.0 - 0.1, rel=1e-4)


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; allowed: sgd, momentum"):
        make_optimizer("lion", _params(), lr=0.1, momentum=0.9, weight_decay=0.0)
