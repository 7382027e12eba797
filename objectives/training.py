"""The training loop of the built-in objectives: supervised classification, one yield per epoch.

Read top to bottom like airbench: setup, the epoch loop (shuffle, step, check for divergence),
evaluation, metrics. The tricks, each with its reason at the line that does it:

* batches are cut by index from tensors already on the device (no DataLoader);
* the last partial batch of an epoch is dropped, so every step sees ``batch_size`` samples:
  the step count is exactly ``epochs * (n_train // batch_size)``, the learning-rate schedule is
  a function of the step alone, and throughput is not skewed by one small slow batch;
* the learning rate is set before every optimizer step from :func:`lr_factor`;
* divergence is watched by :class:`_LossWatch`: on CPU each step's loss is read as a Python
  float (one cheap read, checked before backward); on CUDA the losses stay on the device and
  are checked every 32 steps, because reading a CUDA scalar blocks until the GPU catches up;
* on CUDA: channels_last and bf16 autocast (fast tensor-core convolutions, no loss scaling);
  on CPU: plain float32, for which the same seed gives bit-identical metrics;
* given a ``checkpoint`` (the opt-in protocol), the state after each epoch but the last is saved
  before its metrics are yielded -- model, optimizer, step count (the LR schedule is a function
  of it), the data-order generator and torch's RNG -- and a run that finds a saved state goes
  on from the epoch after it: on CPU its metrics are those of the run that was never stopped.

Divergence -- a non-finite step loss, or one above ten times the first step's -- ends the run
with a final metrics dict whose ``diverged`` is True; it never raises, so one exploding trial is
a recorded outcome and not a crashed study.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from objectives.augment import augmentation_for
from objectives.data import Dataset
from objectives.optimizers import make_optimizer
from objectives.params import Hyperparams
from objectives.protocol import Checkpoint
from objectives.schedule import lr_factor

# A step loss above this multiple of the first step's loss counts as divergence.
_DIVERGENCE_FACTOR = 10.0
# Steps between divergence checks on CUDA: a check stalls the pipeline, so it is amortized
# (a diverged run then wastes at most 31 steps, still within the epoch).
_CUDA_CHECK_EVERY = 32
_EVAL_BATCH_SIZE = 1024


def train_classifier(
    params: dict[str, Any], data: Dataset, model: nn.Module, checkpoint: Checkpoint | None = None
) -> Iterator[dict[str, Any]]:
    """Train ``model`` on ``data`` with the standard ``params``; yield metrics after each epoch.

    ``model`` is used as given (seed the global RNG before building it for reproducible
    initial weights); it is moved to the data's device. Unknown keys of ``params`` are ignored.
    With a ``checkpoint``, training resumes from its saved state, and saves one each epoch.
    """
    hp = Hyperparams.from_params(params)
    device = data.x_train.device

    #############################################
    #                  Setup                    #
    #############################################

    n_train = len(data.x_train)
    steps_per_epoch = n_train // hp.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={hp.batch_size} exceeds the {n_train} training samples")
    total_steps = hp.epochs * steps_per_epoch
    warmup_steps = hp.warmup_epochs * steps_per_epoch

    torch.manual_seed(hp.seed)
    # One generator drives shuffling and augmentation, so a seed replays the whole data stream.
    generator = torch.Generator(device=device).manual_seed(hp.seed)
    if device.type == "cuda":
        # Shapes are fixed (partial batches dropped), so cuDNN's autotuning pays off after step 1.
        torch.backends.cudnn.benchmark = True
        model = model.to(device, memory_format=torch.channels_last)
    else:
        model = model.to(device)
    optimizer = make_optimizer(
        hp.optimizer, model.parameters(), hp.lr, hp.momentum, hp.weight_decay
    )
    augment = augmentation_for(data.name, data.x_train.shape[-1]) if hp.augment else None
    watch = _LossWatch(device)

    step = 0  # optimizer steps taken so far, over all epochs
    first_epoch = 1
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:  # a retried run: on from the epoch after the saved one
        step = _restore(saved, model, optimizer, generator, watch)
        first_epoch = saved["epoch"] + 1
    lr_now = hp.lr * lr_factor(step, total_steps, warmup_steps, hp.decay)

    #############################################
    #                 Training                  #
    #############################################

    for epoch in range(first_epoch, hp.epochs + 1):
        epoch_start = _now(device)
        model.train()
        watch.new_epoch(steps_per_epoch)
        correct = torch.zeros((), dtype=torch.long, device=device)
        order = torch.randperm(n_train, generator=generator, device=device)
        steps_done = 0
        diverged = False

        for i in range(steps_per_epoch):
            index = order[i * hp.batch_size : (i + 1) * hp.batch_size]
            inputs, labels = data.x_train[index], data.y_train[index]
            if augment is not None:
                inputs = augment(inputs, generator)
            inputs = _to_model_layout(inputs)

            lr_now = hp.lr * lr_factor(step, total_steps, warmup_steps, hp.decay)
            for group in optimizer.param_groups:
                group["lr"] = lr_now

            with _autocast(device):
                logits = model(inputs)
            loss = F.cross_entropy(logits.float(), labels)
            correct += (logits.argmax(dim=1) == labels).sum()
            steps_done = i + 1
            # Checked before backward, so on CPU a diverged loss never reaches the weights.
            if not watch.healthy(loss, last_of_epoch=steps_done == steps_per_epoch):
                diverged = True
                break

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1

        train_seconds = _now(device) - epoch_start
        val_loss, val_accuracy = evaluate(model, data.x_val, data.y_val)
        epoch_losses = watch.epoch_losses()
        # Saved before the yield: a caller that stops iterating after it has the state too.
        # Not after the last epoch or a divergence: the run ends there, nothing resumes.
        if checkpoint is not None and epoch < hp.epochs and not diverged:
            checkpoint.save(_state(epoch, step, model, optimizer, generator, watch))
        yield {
            "epoch": epoch,
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "train_loss": float(epoch_losses.mean()),
            # Measured on the (augmented) batches as trained, before each step's update.
            "train_accuracy": float(correct) / (steps_done * hp.batch_size),
            "samples_per_s": steps_done * hp.batch_size / train_seconds,
            "loss_oscillation": loss_oscillation(epoch_losses),
            "diverged": diverged,
            "lr": lr_now,
            "epoch_time_s": _now(device) - epoch_start,
            "steps": step,
        }
        if diverged:
            return


#############################################
#                Checkpoint                 #
#############################################


def _state(
    epoch: int, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
    generator: torch.Generator, watch: _LossWatch,
) -> dict[str, Any]:
    """Everything the epochs after ``epoch`` depend on (the checkpoint serialises it at once)."""
    return {
        "epoch": epoch,
        "step": step,  # the LR schedule is a function of the step alone
        "model": model.state_dict(),  # batchnorm's running statistics included
        "optimizer": optimizer.state_dict(),  # momentum / Adam moments
        "generator": generator.get_state(),  # data order and augmentation
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if generator.device.type == "cuda" else None,
        "loss_limit": watch.limit,  # divergence is judged against the run's first step
    }


def _restore(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
    generator: torch.Generator, watch: _LossWatch,
) -> int:
    """Put a saved :func:`_state` back; returns the optimizer steps it had taken."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves the moments to the params' device
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    limit = state["loss_limit"]
    watch.limit = limit.to(watch.device) if isinstance(limit, torch.Tensor) else limit
    return int(state["step"])


#############################################
#                Evaluation                 #
#############################################


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode.

    Non-finite logits (from a diverged model) count as 0 for the accuracy, which therefore is
    always a finite number; the loss is then NaN or inf, as it should be.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(x), _EVAL_BATCH_SIZE):
        inputs = _to_model_layout(x[start : start + _EVAL_BATCH_SIZE])
        labels = y[start : start + _EVAL_BATCH_SIZE]
        with _autocast(x.device):
            logits = model(inputs).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        finite = torch.nan_to_num(logits, nan=0.0, posinf=0.0, neginf=0.0)
        correct += (finite.argmax(dim=1) == labels).sum()
    model.train()
    return float(loss_sum) / len(x), float(correct) / len(x)


#############################################
#                  Metrics                  #
#############################################


def loss_oscillation(losses: torch.Tensor) -> float:
    """Scale-free step-to-step noise of the training loss over one epoch.

    ``sqrt(mean((l[t+1] - l[t])**2)) / mean(l)``: the RMS of successive differences of the
    per-step losses, divided by their mean. Differencing removes the slow downward trend and
    keeps the batch-to-batch noise (R2: small batches oscillate more); dividing by the mean makes
    epochs with different loss levels comparable. NaN for fewer than two steps.
    """
    if len(losses) < 2:
        return math.nan
    diffs = losses[1:] - losses[:-1]
    return float(diffs.pow(2).mean().sqrt() / losses.mean())


class _LossWatch:
    """Each step's loss, kept for the epoch's metrics and watched for divergence.

    A step is unhealthy when its loss is not finite or exceeds ``_DIVERGENCE_FACTOR`` times
    the first step's loss of the run. On CPU a loss is read to a Python float at once (a
    plain memory read: ~10 fewer tensor ops per step than checking on tensors); on CUDA
    losses stay on the device and a window of them is checked with one reduction and one
    device-to-host read every ``_CUDA_CHECK_EVERY`` steps and at the end of each epoch.
    """

    def __init__(self, device: torch.device) -> None:
        self.on_host = device.type != "cuda"
        self.device = device
        self.limit: float | torch.Tensor | None = None

    def new_epoch(self, steps: int) -> None:
        if self.on_host:
            self.host: list[float] = []
        else:
            self.dev = torch.empty(steps, device=self.device)
            self.count = self.checked = 0

    def healthy(self, loss: torch.Tensor, last_of_epoch: bool) -> bool:
        if self.on_host:
            value = loss.item()
            self.host.append(value)
            if self.limit is None:
                self.limit = _DIVERGENCE_FACTOR * value
            return math.isfinite(value) and value <= self.limit
        self.dev[self.count] = loss.detach()
        self.count += 1
        if self.limit is None:
            self.limit = _DIVERGENCE_FACTOR * self.dev[0]
        if self.count % _CUDA_CHECK_EVERY and not last_of_epoch:
            return True
        window = self.dev[self.checked:self.count]
        self.checked = self.count
        return bool((torch.isfinite(window) & (window <= self.limit)).all())

    def epoch_losses(self) -> torch.Tensor:
        """This epoch's step losses so far (up to and including a diverged one)."""
        return torch.tensor(self.host) if self.on_host else self.dev[:self.count]


def _now(device: torch.device) -> float:
    # CUDA work is asynchronous: without a sync the clock would stop before the GPU does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # bf16 keeps float32's exponent range, so unlike fp16 it needs no loss scaling.
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_model_layout(images: torch.Tensor) -> torch.Tensor:
    # channels_last is what tensor-core convolutions want; on CPU it would only cost a copy.
    if images.is_cuda:
        return images.contiguous(memory_format=torch.channels_last)
    return images
