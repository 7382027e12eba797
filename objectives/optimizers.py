"""The optimizers a study can compare, by their standard names.

``momentum`` is used only by ``momentum`` and ``nesterov``: the rules compare plain SGD with
SGD+momentum (R5) and AdaGrad with RMSProp (R6, R7) in their textbook forms, so RMSProp gets no
momentum term and Adam keeps its usual betas. ``weight_decay`` is L2 added to the gradient for
every optimizer except ``adamw``, whose decay is decoupled from the adaptive scaling
(Loshchilov & Hutter) -- the difference R13's findings need to be read against.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
)


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params``; the training loop overrides ``lr`` per step."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
        )
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
