"""Learning-rate schedule: linear warmup, then one of five decay shapes.

The training loop sets ``lr = peak_lr * lr_factor(step, total_steps, warmup_steps, decay)``
before every optimizer step; ``step`` counts optimizer steps from 0 to ``total_steps - 1``.

Warmup (only while ``step + 1 < warmup_steps``)::

    factor = (step + 1) / warmup_steps

so the first step uses ``1 / warmup_steps`` of the peak and the factor grows linearly by the
same amount each step, reaching exactly 1 at step ``ceil(warmup_steps) - 1``. ``warmup_steps``
may be fractional (``warmup_epochs * steps_per_epoch`` with ``warmup_epochs = 0.5``, say).

Decay, for every later step, with progress ``p = clip((step - warmup_steps) /
(total_steps - warmup_steps), 0, 1)`` (``p = 0`` until warmup ends; ``p = 1`` afterwards if
warmup spans the whole run)::

    constant      1
    step          1 for p < 0.5, 0.1 for 0.5 <= p < 0.75, 0.01 for p >= 0.75
    linear        1 - p
    cosine        0.5 * (1 + cos(pi * p))
    exponential   0.01 ** p                (falls by 100x over the run, never reaches 0)

At the last step ``p = (total_steps - 1 - warmup_steps) / (total_steps - warmup_steps)``,
one step short of 1: linear and cosine end near, not at, zero, and the step after the run
would be exactly zero.

Torch-free on purpose: pure arithmetic is easy to test exactly and cheap to call every step.
"""

from __future__ import annotations

import math

DECAYS: tuple[str, ...] = ("constant", "step", "linear", "cosine", "exponential")


def lr_factor(step: int, total_steps: int, warmup_steps: float, decay: str) -> float:
    """The multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; allowed: {', '.join(DECAYS)}")
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")

    if step + 1 < warmup_steps:
        return (step + 1) / warmup_steps
    return _decay_factor(_progress(step, total_steps, warmup_steps), decay)


def _progress(step: int, total_steps: int, warmup_steps: float) -> float:
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        # Warmup covers the whole run: hold the peak until warmup would end, then it is over.
        return 0.0 if step < warmup_steps else 1.0
    return min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)


def _decay_factor(p: float, decay: str) -> float:
    if decay == "constant":
        return 1.0
    if decay == "step":
        # The classic ResNet-style drops, placed at fixed fractions so any run length works.
        if p >= 0.75:
            return 0.01
        return 0.1 if p >= 0.5 else 1.0
    if decay == "linear":
        return 1.0 - p
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 0.01**p  # exponential
