"""Which device the built-in objectives train on.

The worker that runs a trial decides (it knows whether Ray gave the trial a GPU) and says so
through ``LIANDAN_DEVICE``; without it, a visible GPU is used.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "LIANDAN_DEVICE"


def select_device() -> torch.device:
    """The device named by ``LIANDAN_DEVICE`` (``cpu``, ``cuda``, ``cuda:N``), else the default."""
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"{DEVICE_ENV}={requested!r} is not a device; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{DEVICE_ENV}={requested!r}: only cpu and cuda are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}={requested!r} but torch sees no CUDA device")
    return device


def device_label(device: torch.device) -> str:
    """``cpu`` or the GPU's name, as trials record it in the ``device`` user attribute."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
