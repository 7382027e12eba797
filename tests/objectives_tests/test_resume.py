"""The built-ins' checkpoints: a run stopped after an epoch and started again from what it
saved goes on as if it had never stopped (on CPU, bit for bit), every epoch once."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from objectives import resolve
from objectives.builtin import digits_cnn
from tests.objectives_tests.conftest import TinyData

TIMING = ("samples_per_s", "epoch_time_s")


class MemoryCheckpoint:
    """The protocol's two calls, kept in memory; the state is serialised at `save`, as the
    service does (a model's state_dict holds tensors the next epoch changes)."""

    def __init__(self, saved: bytes | None = None) -> None:
        self.saved = saved
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        if self.saved is None:
            return None
        return torch.load(io.BytesIO(self.saved), map_location="cpu", weights_only=False)

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.saved = buffer.getvalue()
        self.saves += 1


def _without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def _stopped_after(objective, params: dict[str, Any], epochs_done: int) -> MemoryCheckpoint:
    """Run `epochs_done` epochs with a checkpoint, then stop iterating (a killed worker
    keeps nothing but what was saved)."""
    checkpoint = MemoryCheckpoint()
    run = objective(params, checkpoint)
    for _ in range(epochs_done):
        next(run)
    run.close()
    return checkpoint


# Each parameter here carries state across epochs: momentum buffers, warmup then cosine
# decay by step, augmentation and shuffling from the data-order generator, batchnorm's
# running statistics.
PARAMS = {"epochs": 4, "batch_size": 64, "optimizer": "nesterov", "lr": 0.05,
          "momentum": 0.9, "weight_decay": 5e-4, "warmup_epochs": 1.0, "decay": "cosine",
          "augment": True, "batchnorm": True, "seed": 3}


def test_a_resumed_digits_run_continues_the_uninterrupted_one() -> None:
    whole = list(digits_cnn(PARAMS))
    checkpoint = _stopped_after(digits_cnn, PARAMS, epochs_done=2)
    assert checkpoint.saves == 2

    rest = list(digits_cnn(PARAMS, MemoryCheckpoint(checkpoint.saved)))

    assert [m["epoch"] for m in rest] == [3, 4]  # on from the saved epoch, not from 1
    assert _without_timing(rest) == _without_timing(whole[2:])


def test_a_checkpoint_is_given_nothing_after_the_last_epoch() -> None:
    # Saving costs a copy of the model: none where no run would resume from it.
    checkpoint = MemoryCheckpoint()
    history = list(digits_cnn({**PARAMS, "epochs": 3}, checkpoint))
    assert len(history) == 3
    assert checkpoint.saves == 2


def test_a_diverged_run_saves_nothing_at_the_divergence() -> None:
    checkpoint = MemoryCheckpoint()
    history = list(digits_cnn({"epochs": 3, "lr": 1e4, "optimizer": "sgd"}, checkpoint))
    assert history[-1]["diverged"]
    assert checkpoint.saves == len(history) - 1


@pytest.mark.parametrize("name", ["mnist_cnn", "cifar10_resnet"])
def test_torchvision_builtins_resume_too(
    name: str, tiny_data: TinyData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIANDAN_DATA_ROOT", str(tiny_data.root))
    params = {**PARAMS, "epochs": 2, "batch_size": 8}
    objective = resolve(name)
    whole = list(objective(params))
    checkpoint = _stopped_after(objective, params, epochs_done=1)

    rest = list(objective(params, MemoryCheckpoint(checkpoint.saved)))

    assert _without_timing(rest) == _without_timing(whole[1:])
