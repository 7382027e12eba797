from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import objectives.training
from objectives.builtin import digits_cnn
from objectives.data import Dataset, load
from objectives.models import SmallCNN
from objectives.schedule import lr_factor
from objectives.training import loss_oscillation, train_classifier

N_DIGITS_TRAIN = 1437  # 80% of scikit-learn's 1797 digits
TIMING = ("samples_per_s", "epoch_time_s")


def _without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


@pytest.fixture
def recorded_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every optimizer step the training loop takes, read in a hook."""
    lrs: list[float] = []
    make_optimizer = objectives.training.make_optimizer

    def recording_make_optimizer(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        optimizer = make_optimizer(*args, **kwargs)
        optimizer.register_step_pre_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(objectives.training, "make_optimizer", recording_make_optimizer)
    return lrs


@pytest.mark.parametrize(
    ("warmup_epochs", "decay"),
    [(0.0, "cosine"), (0.5, "linear"), (2.0, "step"), (1.0, "exponential")],
)
def test_the_schedule_is_applied_every_step(
    recorded_lrs: list[float], warmup_epochs: float, decay: str
) -> None:
    params = {"lr": 0.08, "batch_size": 128, "epochs": 3, "warmup_epochs": warmup_epochs}
    history = list(digits_cnn({**params, "decay": decay}))

    steps_per_epoch = N_DIGITS_TRAIN // 128  # 11: the partial batch is dropped
    total = 3 * steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    expected = [0.08 * lr_factor(s, total, warmup_steps, decay) for s in range(total)]
    assert recorded_lrs == pytest.approx(expected, rel=1e-12)
    # The yielded `lr` is the one of each epoch's last step.
    assert [m["lr"] for m in history] == pytest.approx(expected[steps_per_epoch - 1 :: 11])
    assert [m["steps"] for m in history] == [11, 22, 33]


def test_half_epoch_warmup_by_hand(recorded_lrs: list[float]) -> None:
    list(digits_cnn({"lr": 0.1, "batch_size": 128, "epochs": 2, "warmup_epochs": 0.5}))
    # 5.5 warmup steps: 0.1/5.5 per step up to step 5, which is at the peak.
    assert recorded_lrs[:6] == pytest.approx([0.1 * (s + 1) / 5.5 for s in range(5)] + [0.1])
    assert max(recorded_lrs) == 0.1


def test_same_seed_same_metrics_and_different_seed_different_metrics() -> None:
    params = {"epochs": 2, "batch_size": 64, "augment": True, "seed": 3}
    first = _without_timing(list(digits_cnn(params)))
    second = _without_timing(list(digits_cnn(params)))
    other = _without_timing(list(digits_cnn({**params, "seed": 4})))

    assert first == second
    assert [m["train_loss"] for m in first] != [m["train_loss"] for m in other]
    assert [m["val_loss"] for m in first] != [m["val_loss"] for m in other]


@pytest.mark.parametrize("batchnorm", [True, False])
def test_divergence_ends_the_run_with_a_final_dict(batchnorm: bool) -> None:
    params = {"optimizer": "sgd", "lr": 100.0, "epochs": 5, "batchnorm": batchnorm}
    history = list(digits_cnn(params))  # must not raise

    assert history[-1]["diverged"] is True
    assert all(m["diverged"] is False for m in history[:-1])
    assert len(history) < 5
    assert math.isfinite(history[-1]["val_accuracy"])
    assert 0.0 <= history[-1]["val_accuracy"] <= 1.0
    # It stopped within the epoch, at the first bad step.
    assert history[-1]["steps"] < len(history) * (N_DIGITS_TRAIN // 64)


def test_a_healthy_run_never_reports_divergence() -> None:
    history = list(digits_cnn({"epochs": 2, "batch_size": 128}))
    assert [m["diverged"] for m in history] == [False, False]


class BreaksAtStep(nn.Module):
    """SmallCNN whose training-mode logits turn bad from the ``at``-th forward pass on."""

    def __init__(self, at: int, scale: float) -> None:
        super().__init__()
        self.net = SmallCNN(1, 10, 8, batchnorm=True)
        self.at, self.scale, self.calls = at, scale, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.at:
                return logits * self.scale
        return logits


@pytest.mark.parametrize(
    ("scale", "why"), [(float("nan"), "non-finite loss"), (1e4, "loss above 10x the first")]
)
def test_divergence_stops_at_the_bad_step_in_a_later_epoch(scale: float, why: str) -> None:
    steps_per_epoch = N_DIGITS_TRAIN // 128  # 11
    model = BreaksAtStep(at=25, scale=scale)  # healthy for 25 steps: into the third epoch
    history = list(
        train_classifier({"epochs": 6, "batch_size": 128}, load("digits", "cpu"), model)
    )

    assert [m["diverged"] for m in history] == [False, False, True], why
    # Stopped before stepping on the bad loss: 25 steps taken, the 26th forward pass was the last.
    assert history[-1]["steps"] == 25 and model.calls == 26
    assert history[-1]["steps"] < 3 * steps_per_epoch
    assert not math.isfinite(history[-1]["train_loss"]) or history[-1]["train_loss"] > 10
    assert 0.0 <= history[-1]["val_accuracy"] <= 1.0


def test_stopping_after_the_first_epoch_is_safe() -> None:
    run = digits_cnn({"epochs": 50, "batch_size": 128})
    first = next(run)
    run.close()  # what a pruner's caller does
    assert first["epoch"] == 1
    with pytest.raises(StopIteration):
        next(run)
    # The process is left fit for the next trial.
    [again] = digits_cnn({"epochs": 1, "batch_size": 128})
    assert again["epoch"] == 1


def test_train_classifier_takes_any_dataset_and_model() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100, 2, 6, 6, generator=generator)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()  # learnable: the sign of channel 0's mean
    data = Dataset(x[:80], y[:80], x[80:], y[80:], num_classes=2, name="synthetic")
    model = SmallCNN(in_channels=2, num_classes=2, width=8, batchnorm=True)

    history = list(train_classifier({"epochs": 3, "batch_size": 16, "lr": 0.1}, data, model))
    assert [m["steps"] for m in history] == [5, 10, 15]
    assert history[-1]["train_accuracy"] > 0.5


def test_batch_larger_than_the_training_set_is_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size=5000 exceeds the 1437 training samples"):
        next(digits_cnn({"batch_size": 5000}))


def test_invalid_params_are_rejected_before_training() -> None:
    with pytest.raises(ValueError, match="decay='warm'"):
        next(digits_cnn({"decay": "warm"}))
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        next(digits_cnn({"optimizer": "lion"}))


def test_evaluation_leaves_the_model_in_training_mode() -> None:
    data = load("digits", "cpu")
    model = SmallCNN(1, 10, 8, batchnorm=True)
    loss, accuracy = objectives.training.evaluate(model, data.x_val, data.y_val)
    assert model.training
    assert loss > 0 and 0 <= accuracy <= 1


def test_evaluation_of_a_broken_model_gives_a_finite_accuracy() -> None:
    data = load("digits", "cpu")
    model = SmallCNN(1, 10, 8, batchnorm=False)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    loss, accuracy = objectives.training.evaluate(model, data.x_val, data.y_val)
    assert math.isnan(loss)
    assert 0.0 <= accuracy <= 1.0  # all-zero logits: every image is called class 0


def test_loss_oscillation() -> None:
    assert loss_oscillation(torch.tensor([2.0, 2.0, 2.0])) == 0.0
    # Successive differences all +-2 around a mean of 2: RMS 2 / mean 2.
    assert loss_oscillation(torch.tensor([1.0, 3.0, 1.0, 3.0])) == pytest.approx(1.0)
    # Scale-free: the same relative noise at a tenth of the loss.
    assert loss_oscillation(torch.tensor([0.1, 0.3, 0.1, 0.3])) == pytest.approx(1.0)
    # A steady downward trend counts much less than noise of the same size.
    trend = loss_oscillation(torch.linspace(3.0, 1.0, 21))
    assert trend == pytest.approx(0.1 / 2.0)
    assert math.isnan(loss_oscillation(torch.tensor([1.0])))


def test_smaller_batches_oscillate_more() -> None:
    # The measured form of rule R2, at a fixed LR: a sanity check that the metric sees noise.
    def oscillation(batch_size: int) -> float:
        [metrics] = digits_cnn({"epochs": 1, "batch_size": batch_size, "lr": 0.02})
        return metrics["loss_oscillation"]

    assert oscillation(16) > oscillation(256)


@pytest.mark.parametrize("on_host", [True, False])
def test_the_loss_watch_catches_divergence_on_host_at_once_on_device_by_window(on_host) -> None:
    # The device path (CUDA's) runs here on CPU tensors: same arithmetic, windowed checks.
    from objectives.training import _CUDA_CHECK_EVERY, _LossWatch

    watch = _LossWatch(torch.device("cpu"))
    watch.on_host = on_host
    steps = _CUDA_CHECK_EVERY + 8
    watch.new_epoch(steps)
    losses = [2.0 - 0.01 * i for i in range(steps)]
    losses[_CUDA_CHECK_EVERY + 3] = float("nan")
    verdicts = [watch.healthy(torch.tensor(v), last_of_epoch=i == steps - 1)
                for i, v in enumerate(losses)]
    bad = _CUDA_CHECK_EVERY + 3 if on_host else steps - 1  # the first step that says so
    assert verdicts.index(False) == bad and all(verdicts[:bad])
    kept = watch.epoch_losses()
    assert len(kept) == steps and math.isnan(kept[_CUDA_CHECK_EVERY + 3])
    # Above 10x the first step's loss is divergence too, on either path.
    watch.new_epoch(steps)
    assert not all(watch.healthy(torch.tensor(v), last_of_epoch=True) for v in (1.0, 25.0))
